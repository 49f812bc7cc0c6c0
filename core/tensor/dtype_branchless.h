#pragma once
// Branch-free forms of the f32 -> f16 / bf16 roundings of dtype.h, for loops over arrays (they
// vectorize: no calls, no branches). Same bits as f32_to_f16 / round_to_f16 / f32_to_bf16,
// NaN included (tested over every 251st f32 bit pattern).
#include <cstdint>

namespace kvscope {

inline uint32_t f32_bits(float f) { return __builtin_bit_cast(uint32_t, f); }
inline float f32_from_bits(uint32_t u) { return __builtin_bit_cast(float, u); }

// round_to_f16 without branches: the nearest f16 value (half to even), f16 subnormals, overflow to
// Inf, NaN -> the quiet NaN f32_to_f16 gives.
inline float round_f16_value(float f) {
  const uint32_t x = f32_bits(f), sign = x & 0x80000000u, ax = x & 0x7fffffffu;
  const float sub = (f32_from_bits(ax) + 0.5f) - 0.5f;  // subnormal f16: multiples of 2^-24
  uint32_t r = (ax + 0xfffu + ((ax >> 13) & 1u)) & 0xffffe000u;
  r = ax < 0x38800000u ? f32_bits(sub) : r;
  r = ax >= 0x477ff000u ? 0x7f800000u : r;
  r = ax > 0x7f800000u ? 0x7fc00000u : r;
  return f32_from_bits(r | sign);
}

// f32_to_f16 without branches (same bits).
inline uint16_t f16_bits_of(float f) {
  const uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  uint32_t h = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
  h = ax < 0x38800000u ? f32_bits(f32_from_bits(ax) + 0.5f) - 0x3f000000u : h;
  h = ax >= 0x477ff000u ? 0x7c00u : h;
  h = ax > 0x7f800000u ? 0x7e00u : h;
  return static_cast<uint16_t>(h | sign);
}

inline float round_bf16_value(float f) {
  const uint32_t x = f32_bits(f);
  const uint32_t r = (x & 0x7fffffffu) > 0x7f800000u ? (x | 0x400000u) : x + 0x7fffu + ((x >> 16) & 1u);
  return f32_from_bits(r & 0xffff0000u);
}

}  // namespace kvscope
