// Bulk float32 → bfloat16 conversion (see bf16.h).
#include "autograd/cpu/bf16.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace lcd::cpu {

void to_bf16(const float* src, bf16* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  // vcvtne2ps2bf16 rounds to nearest even like to_bf16(float), but treats denormal inputs as zero.
  for (; i + 32 <= n; i += 32) {
    const __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
    _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
#endif
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

}  // namespace lcd::cpu
