// FP8 e4m3/e5m2 against the formats' definitions (all 256 codes, computed here independently in
// double from sign, exponent and mantissa fields), round-to-nearest-even at every midpoint,
// saturation and NaN; NVFP4 on a hand-worked block.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "core/quant/formats/fp8.h"
#include "core/quant/formats/nvfp4.h"

using namespace kvscope::formats;

namespace {

struct Def {
  int E, M, bias;
  bool ieee_specials;  // e5m2: all-ones exponent is inf/NaN; e4m3fn: only S.1111.111 is NaN
};
const Def kDefs[2] = {{4, 3, 7, false}, {5, 2, 15, true}};

// The value the format's definition gives a code: (-1)^s * 2^(1-bias) * m/2^M for e = 0,
// (-1)^s * 2^(e-bias) * (1 + m/2^M) otherwise; NaN/inf per the special-value rules.
double by_definition(int f, int code) {
  const Def& d = kDefs[f];
  const int s = code >> 7, e = (code >> d.M) & ((1 << d.E) - 1), m = code & ((1 << d.M) - 1);
  const double sign = s ? -1.0 : 1.0;
  const int emax = (1 << d.E) - 1;
  if (d.ieee_specials && e == emax) return m == 0 ? sign * std::numeric_limits<double>::infinity() : std::nan("");
  if (!d.ieee_specials && e == emax && m == (1 << d.M) - 1) return std::nan("");
  if (e == 0) return sign * std::pow(2.0, 1 - d.bias) * (m / std::pow(2.0, d.M));
  return sign * std::pow(2.0, e - d.bias) * (1.0 + m / std::pow(2.0, d.M));
}

}  // namespace

TEST_CASE("FP8: every code of e4m3 and e5m2 decodes to the format's definition", "[formats][fp8]") {
  for (int f = 0; f < 2; ++f) {
    const Fp8Format fmt = static_cast<Fp8Format>(f);
    int nans = 0, infs = 0;
    double maxv = 0;
    for (int c = 0; c < 256; ++c) {
      INFO(fp8_info(fmt).name << " code " << c);
      const double want = by_definition(f, c);
      const float got = fp8_decode(fmt, static_cast<uint8_t>(c));
      if (std::isnan(want)) {
        CHECK(std::isnan(got));
        ++nans;
        continue;
      }
      CHECK(double(got) == want);
      if (std::isinf(want)) {
        ++infs;
        continue;
      }
      maxv = std::max(maxv, std::fabs(want));
      // Every finite code is the encoding of its own value (-0 keeps its sign bit).
      CHECK(int(fp8_encode(fmt, got)) == c);
    }
    if (fmt == Fp8Format::E4M3) {
      CHECK(nans == 2);
      CHECK(infs == 0);
      CHECK(maxv == 448.0);
    } else {
      CHECK(nans == 6);
      CHECK(infs == 2);
      CHECK(maxv == 57344.0);
    }
    CHECK(double(fp8_info(fmt).max_finite) == maxv);
  }
  CHECK(fp8_decode(Fp8Format::E4M3, 0x01) == std::ldexp(1.0f, -9));   // smallest subnormal
  CHECK(fp8_decode(Fp8Format::E5M2, 0x01) == std::ldexp(1.0f, -16));
  CHECK(fp8_decode(Fp8Format::E4M3, 0x7E) == 448.0f);
  CHECK(fp8_decode(Fp8Format::E5M2, 0x7B) == 57344.0f);
}

TEST_CASE("FP8: round to nearest, ties to even, at every midpoint of neighbouring codes", "[formats][fp8]") {
  for (int f = 0; f < 2; ++f) {
    const Fp8Format fmt = static_cast<Fp8Format>(f);
    const int top = fmt == Fp8Format::E4M3 ? 0x7E : 0x7B;
    for (int c = 0; c < top; ++c) {
      const float lo = fp8_decode(fmt, uint8_t(c)), hi = fp8_decode(fmt, uint8_t(c + 1));
      const float mid = 0.5f * (lo + hi);  // exact: neighbours differ in the last of <= 4 significant bits
      INFO(fp8_info(fmt).name << " between codes " << c << " and " << c + 1);
      REQUIRE(double(mid) == 0.5 * (double(lo) + hi));
      CHECK(int(fp8_encode(fmt, mid)) == (c % 2 == 0 ? c : c + 1));  // the even mantissa wins
      CHECK(int(fp8_encode(fmt, std::nextafter(mid, 0.0f))) == c);
      CHECK(int(fp8_encode(fmt, std::nextafter(mid, 1e30f))) == c + 1);
      CHECK(int(fp8_encode(fmt, -mid)) == (0x80 | (c % 2 == 0 ? c : c + 1)));
    }
  }
  CHECK(int(fp8_encode(Fp8Format::E4M3, 1e-10f)) == 0);  // below half the smallest subnormal
  CHECK(int(fp8_encode(Fp8Format::E4M3, std::ldexp(1.0f, -10))) == 0);  // exactly half: even (0)
  CHECK(int(fp8_encode(Fp8Format::E4M3, std::ldexp(3.0f, -10))) == 2);  // 1.5 subnormal ulps: tie -> even (2)
}

TEST_CASE("FP8: saturation to the largest finite value, NaN stays NaN, inf", "[formats][fp8]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  CHECK(int(fp8_encode(Fp8Format::E4M3, 449.0f)) == 0x7E);
  CHECK(int(fp8_encode(Fp8Format::E4M3, 470.0f)) == 0x7E);  // would round to 480, which e4m3 lacks
  CHECK(int(fp8_encode(Fp8Format::E4M3, 1e30f)) == 0x7E);
  CHECK(int(fp8_encode(Fp8Format::E4M3, inf)) == 0x7E);
  CHECK(int(fp8_encode(Fp8Format::E4M3, -inf)) == 0xFE);
  CHECK(int(fp8_encode(Fp8Format::E5M2, 61000.0f)) == 0x7B);
  CHECK(int(fp8_encode(Fp8Format::E5M2, inf)) == 0x7B);
  CHECK(int(fp8_encode(Fp8Format::E5M2, -1e30f)) == 0xFB);
  CHECK(std::isinf(fp8_decode(Fp8Format::E5M2, 0x7C)));
  CHECK(fp8_decode(Fp8Format::E5M2, 0xFC) == -inf);
  for (int f = 0; f < 2; ++f) CHECK(std::isnan(fp8_decode(Fp8Format(f), fp8_encode(Fp8Format(f), nan))));
}

TEST_CASE("FP8: scaled tensor round trip within half an ulp of the format", "[formats][fp8]") {
  std::vector<float> x(257);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i)) * 30.0f;
  const float amax = abs_max(x.data(), x.size());
  for (int f = 0; f < 2; ++f) {
    const Fp8Format fmt = Fp8Format(f);
    const float scale = fp8_scale_from_amax(fmt, amax);
    CHECK(scale == amax / fp8_info(fmt).max_finite);
    std::vector<uint8_t> codes(x.size());
    std::vector<float> y(x.size());
    fp8_quantize(fmt, x.data(), x.size(), scale, codes.data());
    fp8_dequantize(fmt, codes.data(), x.size(), scale, y.data());
    // Relative error of a normal value <= 2^-(M+1) (half an ulp), plus the scale's float rounding.
    const double kHalfUlp = std::ldexp(1.0, -(fp8_info(fmt).man_bits + 1)) * (1 + 1e-6);
    const double kMinNormal = std::ldexp(1.0, 1 - fp8_info(fmt).bias) * scale;
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::fabs(x[i]) < kMinNormal) continue;
      CHECK(std::fabs(double(y[i]) - x[i]) <= kHalfUlp * std::fabs(x[i]));
    }
  }
  CHECK(fp8_scale_from_amax(Fp8Format::E4M3, 0.0f) == 1.0f);
}

TEST_CASE("NVFP4: e2m1 values and ties to even", "[formats][nvfp4]") {
  const float vals[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 16; ++c) CHECK(e2m1_decode(uint8_t(c)) == (c & 8 ? -vals[c & 7] : vals[c & 7]));
  // Ties: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4 (even codes).
  const float ties[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  const int want[7] = {0, 2, 2, 4, 4, 6, 6};
  for (int i = 0; i < 7; ++i) {
    CHECK(int(e2m1_encode(ties[i])) == want[i]);
    CHECK(int(e2m1_encode(-ties[i])) == (8 | want[i]));
  }
  CHECK(int(e2m1_encode(7.0f)) == 7);  // saturates at 6
  CHECK(int(e2m1_encode(100.0f)) == 7);
  CHECK(int(e2m1_encode(2.6f)) == 5);
}

TEST_CASE("NVFP4: a hand-worked block", "[formats][nvfp4]") {
  // Tensor amax 2688 -> global scale g = 2688 / (6 * 448) = 1. Block 0 (amax 12): s = 12/6 = 2 (e4m3
  // exact) -> x/2 = 6, -3, 1.2->1, 0.3->0.5, 0.25->0 (tie, even), 2.5->2 (tie, even), 1.75->2 (tie, even), ...
  // Block 1 (amax 2688): s = 448 -> 2688/448 = 6, 1000/448 = 2.23 -> 2, the rest 0.
  std::vector<float> x(32, 0.0f);
  const float b0[16] = {12, -6, 2.4f, 0.6f, 0.5f, 5, 3.5f, -7, 0, 1, -1, 9, 10, 11, -12, 0.9f};
  for (int j = 0; j < 16; ++j) x[j] = b0[j];
  x[16] = 2688, x[17] = -1000, x[18] = 100;
  const float g = nvfp4_global_scale(2688.0f);
  CHECK(g == 1.0f);
  std::vector<uint8_t> codes(16), scales(2);
  nvfp4_quantize(x.data(), 32, g, codes.data(), scales.data());
  CHECK(fp8_decode(Fp8Format::E4M3, scales[0]) == 2.0f);
  CHECK(fp8_decode(Fp8Format::E4M3, scales[1]) == 448.0f);
  std::vector<float> y(32);
  nvfp4_dequantize(codes.data(), scales.data(), 32, g, y.data());
  // x/2:       6,  -3, 1.2, 0.3, 0.25, 2.5, 1.75, -3.5, 0, 0.5, -0.5, 4.5, 5, 5.5, -6, 0.45
  // e2m1:      6,  -3, 1,   0.5, 0,    2,   2,    -4,   0, 0.5, -0.5, 4,   4, 6,   -6, 0.5
  const float want0[16] = {12, -6, 2, 1, 0, 4, 4, -8, 0, 1, -1, 8, 8, 12, -12, 1};
  for (int j = 0; j < 16; ++j) CHECK(y[j] == want0[j]);
  CHECK(y[16] == 2688.0f);
  CHECK(y[17] == -896.0f);  // -1000/448 = -2.23 -> -2
  CHECK(y[18] == 0.0f);     // 100/448 = 0.223 -> 0
  for (int j = 19; j < 32; ++j) CHECK(y[j] == 0.0f);
  // An all-zero block gets scale 1.0 (e4m3 0x38) and zero codes.
  std::vector<float> z(16, 0.0f);
  nvfp4_quantize(z.data(), 16, 0.5f, codes.data(), scales.data());
  CHECK(int(scales[0]) == 0x38);
}
