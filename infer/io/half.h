// IEEE binary16 (F16) and bfloat16 (BF16) conversions, round to nearest even (as PyTorch's .to()).
#pragma once
#include <cstdint>
#include <cstring>

namespace lcd {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);  // inf / NaN
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);  // inf / NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;  // rounds to ≥ 65520: overflow to inf
  if (abs < 0x38800000) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000) return sign;  // < 2^-25 rounds to zero
    const uint32_t e = abs >> 23, m = (abs & 0x7fffff) | 0x800000;
    const int shift = 126 - int(e);  // 14 + (113 - e) → mantissa shift into the subnormal range
    const uint32_t half_m = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
    return sign | uint16_t(half_m + (rem > mid || (rem == mid && (half_m & 1))));
  }
  const uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);  // round to nearest even on the dropped 13 bits
  return sign | uint16_t((rounded - (uint32_t(127 - 15) << 23)) >> 13);
}

inline float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);  // keep NaN a NaN
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

}  // namespace lcd
