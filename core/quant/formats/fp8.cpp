// FP8 e4m3 / e5m2 encode and decode; see fp8.h.
#include "core/quant/formats/fp8.h"

#include <array>
#include <cmath>
#include <cstring>

namespace kvscope::formats {

namespace {

const Fp8Info kInfo[] = {{"e4m3", 4, 3, 7, 448.0f}, {"e5m2", 5, 2, 15, 57344.0f}};

// Largest finite code (sign bit clear) and the NaN code each encoder writes.
constexpr uint8_t kMaxCode[] = {0x7E, 0x7B};
constexpr uint8_t kNanCode[] = {0x7F, 0x7F};

// The value of a code by the format's definition: subnormal (e = 0) m/2^M * 2^(1-bias), else
// (1 + m/2^M) * 2^(e-bias); e4m3's all-ones code is NaN, e5m2's all-ones exponent is inf/NaN.
float decode_by_definition(Fp8Format f, uint8_t code) {
  const Fp8Info& in = kInfo[static_cast<int>(f)];
  const int M = in.man_bits;
  const int e = (code >> M) & ((1 << in.exp_bits) - 1);
  const int m = code & ((1 << M) - 1);
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int emax = (1 << in.exp_bits) - 1;
  if (f == Fp8Format::E4M3 && e == emax && m == (1 << M) - 1) return std::nanf("");
  if (f == Fp8Format::E5M2 && e == emax) return m == 0 ? sign * INFINITY : std::nanf("");
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), 1 - in.bias - M);
  return sign * std::ldexp(static_cast<float>((1 << M) + m), e - in.bias - M);
}

struct Tables {
  std::array<float, 256> v[2];
  Tables() {
    for (int f = 0; f < 2; ++f)
      for (int c = 0; c < 256; ++c) v[f][c] = decode_by_definition(static_cast<Fp8Format>(f), static_cast<uint8_t>(c));
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const Fp8Info& fp8_info(Fp8Format f) { return kInfo[static_cast<int>(f)]; }

bool parse_fp8_format(std::string_view name, Fp8Format* out) {
  for (int f = 0; f < 2; ++f)
    if (kInfo[f].name == name) {
      *out = static_cast<Fp8Format>(f);
      return true;
    }
  return false;
}

float fp8_decode(Fp8Format f, uint8_t code) { return tables().v[static_cast<int>(f)][code]; }

uint8_t fp8_encode(Fp8Format f, float x) {
  const int fi = static_cast<int>(f);
  const Fp8Info& in = kInfo[fi];
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  if (std::isnan(x)) return sign | kNanCode[fi];
  const float a = std::fabs(x);
  if (a >= in.max_finite) return sign | kMaxCode[fi];  // saturate (inf included)
  const int M = in.man_bits;
  if (a < std::ldexp(1.0f, 1 - in.bias)) {
    // Subnormal range: the code is the multiple of 2^(1-bias-M), rounded half to even (scaling by a
    // power of two is exact); 2^M lands on the smallest normal's code.
    const float q = std::nearbyint(std::ldexp(a, in.bias - 1 + M));
    return sign | static_cast<uint8_t>(q);
  }
  // Normal: round the f32 significand to M bits, ties to even; a carry bumps the exponent.
  std::memcpy(&u, &a, 4);
  const int shift = 23 - M;
  u += (1u << (shift - 1)) - 1 + ((u >> shift) & 1u);
  const int code = static_cast<int>(u >> shift) - ((127 - in.bias) << M);
  return sign | static_cast<uint8_t>(code > kMaxCode[fi] ? kMaxCode[fi] : code);
}

void fp8_quantize(Fp8Format f, const float* x, size_t n, float scale, uint8_t* codes) {
  for (size_t i = 0; i < n; ++i) codes[i] = fp8_encode(f, x[i] / scale);
}

void fp8_dequantize(Fp8Format f, const uint8_t* codes, size_t n, float scale, float* y) {
  const float* t = tables().v[static_cast<int>(f)].data();
  for (size_t i = 0; i < n; ++i) y[i] = t[codes[i]] * scale;
}

float fp8_scale_from_amax(Fp8Format f, float amax) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;
  return amax / fp8_info(f).max_finite;
}

float abs_max(const float* x, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > m) m = a;
  }
  return m;
}

}  // namespace kvscope::formats
