#pragma once
// bfloat16 (issue 25): the top 16 bits of an IEEE float32 (sign, 8 exponent bits, 7 mantissa
// bits). Float32 -> bf16 rounds to nearest, ties to even, as cuda_bf16.h's __float2bfloat16 and
// PyTorch do: NaN stays a (quiet) NaN, infinities stay infinite, a finite value past the largest
// bf16 rounds to infinity, subnormals round like any other value. Host and device functions, so the
// CPU twins of bf16 kernels round exactly where and as the kernels do.
#include <cstdint>
#include <cstring>

#include "core/rng.h"  // CAC_HD

namespace cac {

CAC_HD uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
CAC_HD float float_of_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// The bf16 bit pattern nearest to f (ties to even).
CAC_HD uint16_t bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN: keep it quiet
  // Adding 0x7fff plus the kept part's lowest bit carries into the kept bits exactly when the
  // dropped half is above one half, or exactly one half with an odd kept part.
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
CAC_HD float bf16_to_float(uint16_t b) { return float_of_bits(uint32_t(b) << 16); }
// f rounded to the nearest bf16 value, as a float.
CAC_HD float round_bf16(float f) { return bf16_to_float(bf16_bits(f)); }

// The element type of DType::BF16 tensors: made from any number through float32 (as PyTorch's
// c10::BFloat16 is: a double is rounded to float32 first), read back as float32 exactly.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  template <class T>
  CAC_HD explicit bf16(T v) : bits(bf16_bits(float(v))) {}
  CAC_HD explicit operator float() const { return bf16_to_float(bits); }
  static CAC_HD bf16 from_bits(uint16_t b) {
    bf16 x;
    x.bits = b;
    return x;
  }
};

}  // namespace cac
