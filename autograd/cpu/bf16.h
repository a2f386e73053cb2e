// float32 ↔ bfloat16 conversion (round to nearest even, NaN kept quiet), vectorised with AVX512-BF16 where
// the build targets it and plain integer arithmetic elsewhere.
#pragma once
#include <cstdint>
#include <cstring>

#include "autograd/cpu/matmul.h"

namespace lcd::cpu {

inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16>((u >> 16) | 0x40);  // NaN stays a quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16>(u >> 16);
}

inline float from_bf16(bf16 h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// dst[i] = to_bf16(src[i]) for n values.
void to_bf16(const float* src, bf16* dst, int64_t n);

}  // namespace lcd::cpu
