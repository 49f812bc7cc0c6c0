// KVQuant: a hand-worked non-uniform codebook, exact bit accounting, dense-and-sparse outliers,
// Q-Norm's moment matching, pre-RoPE keys with RoPE re-applied, k-means levels vs uniform levels.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "core/quant/formats/kvquant.h"
#include "core/tensor/dtype.h"
#include "core/tensor/rope.h"
#include "core/util/error.h"

using namespace kvscope;
using namespace kvscope::formats;

namespace {

std::vector<float> gaussian(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

double nmse(const float* a, const float* b, size_t n) {
  double e = 0, r = 0;
  for (size_t i = 0; i < n; ++i) e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), r += double(a[i]) * a[i];
  return e / r;
}

}  // namespace

TEST_CASE("KVQuant: hand-worked 2-bit value codebook, per-token ranges, bits", "[formats][kvquant]") {
  // Calibration tokens whose normalized values are exactly -1, -1/3, 1/3, 1: k-means with 4 levels
  // returns them and Q-Norm leaves them (the quantized samples already have the samples' moments).
  const int d = 4, tokens = 9;  // token 0 is the fp16 sink
  std::vector<float> calib(size_t(tokens) * d);
  for (int t = 0; t < tokens; ++t) {
    const float s = float(t + 1);
    const float row[4] = {-3 * s, -s, s, 3 * s};
    for (int c = 0; c < d; ++c) calib[size_t(t) * d + c] = row[(c + t) % 4];
  }
  KvQuantOptions o;
  o.bits = 2;
  const KvQuantCalibration cal = kvquant_calibrate(calib.data(), 1, tokens, d, false, o);
  REQUIRE(cal.enc.size() == 4);
  const float want[4] = {-1.0f, -1.0f / 3, 1.0f / 3, 1.0f};
  for (int i = 0; i < 4; ++i) {
    CHECK(cal.enc[i] == Approx(want[i]).margin(1e-6));
    CHECK(cal.dec[i] == Approx(want[i]).margin(1e-3));  // fp16 levels
  }
  // A token 0, 3, 6, -3: range [-3, 6] -> normalized -1/3, 1/3, 1, -1: exact up to fp16 levels.
  const std::vector<float> x = {100.0f, 1.0f, 2.0f, 3.0f, 0.0f, 3.0f, 6.0f, -3.0f};
  std::vector<float> y(x.size());
  const KvQuantHeadStats st = kvquant_roundtrip(cal, 0, x.data(), 2, o, y.data());
  for (int c = 0; c < 4; ++c) CHECK(y[c] == x[c]);  // fp16 sink token
  for (int c = 4; c < 8; ++c) CHECK(y[c] == Approx(x[c]).margin(2e-3));
  // Token 0: 4 x 16; token 1: 4 x 2 code bits + 32 (lo, hi fp16). No sparse part.
  CHECK(st.bits == 64 + 8 + 32);
  CHECK(st.outliers == 0);
  CHECK(kvquant_static_bits(cal) == 4 * 16);
}

TEST_CASE("KVQuant: dense-and-sparse keeps the largest value of a token in fp16, every byte counted", "[formats][kvquant]") {
  const int d = 128, tokens = 400;
  std::vector<float> calib = gaussian(size_t(tokens) * d, 1);
  KvQuantOptions o;
  o.bits = 3;
  o.outlier_fraction = 0.01;  // round(1.28) = 1 per token
  o.fp16_tokens = 0;
  const KvQuantCalibration cal = kvquant_calibrate(calib.data(), 1, tokens, d, false, o);
  std::vector<float> x = gaussian(size_t(2) * d, 2), y(x.size());
  x[17] = 250.0f;  // token 0's outlier
  const KvQuantHeadStats st = kvquant_roundtrip(cal, 0, x.data(), 2, o, y.data());
  CHECK(y[17] == 250.0f);
  CHECK(st.outliers == 2);
  // Per token: 127 x 3 code bits + 1 x (16 + 7 channel bits) + 8 count bits + 32 range bits.
  CHECK(st.bits == 2 * (127 * 3 + 23 + 8 + 32));
  // Without the sparse part the outlier stretches token 0's range and its other values suffer.
  o.outlier_fraction = 0;
  const KvQuantCalibration dense = kvquant_calibrate(calib.data(), 1, tokens, d, false, o);
  std::vector<float> yd(x.size());
  kvquant_roundtrip(dense, 0, x.data(), 2, o, yd.data());
  x[17] = y[17] = yd[17] = 0;
  CHECK(nmse(x.data(), y.data(), size_t(d)) * 10 < nmse(x.data(), yd.data(), size_t(d)));
}

TEST_CASE("KVQuant: Q-Norm matches the calibration moments; k-means levels beat uniform levels", "[formats][kvquant]") {
  const int d = 64, tokens = 2000;
  std::vector<float> calib = gaussian(size_t(tokens) * d, 3);
  for (size_t i = 0; i < calib.size(); ++i) calib[i] = calib[i] * calib[i] * calib[i];  // heavy tails
  KvQuantOptions o;
  o.bits = 2;
  o.fp16_tokens = 0;
  const KvQuantCalibration cal = kvquant_calibrate(calib.data(), 1, tokens, d, true, o);
  // Keys: per-channel ranges over calibration; dequantized calibration keeps mean and sd per layer.
  std::vector<float> y(calib.size());
  kvquant_roundtrip(cal, 0, calib.data(), tokens, o, y.data());
  double m = 0, m2 = 0, mq = 0, mq2 = 0;
  for (int t = 0; t < tokens; ++t)
    for (int c = 0; c < d; ++c) {
      const size_t i = size_t(t) * d + c;
      const double lo = cal.lo[c], hi = cal.hi[c];
      const double u = 2 * (calib[i] - lo) / (hi - lo) - 1, uq = 2 * (y[i] - lo) / (hi - lo) - 1;
      m += u, m2 += u * u, mq += uq, mq2 += uq * uq;
    }
  const double n = double(tokens) * d;
  CHECK(mq / n == Approx(m / n).margin(2e-3));  // fp16 rounding of levels and ranges
  CHECK(std::sqrt(mq2 / n - (mq / n) * (mq / n)) == Approx(std::sqrt(m2 / n - (m / n) * (m / n))).epsilon(5e-3));
  // The k-means datatype beats evenly spaced levels on held-out data of the same distribution.
  o.q_norm = false;
  KvQuantCalibration km = kvquant_calibrate(calib.data(), 1, tokens, d, true, o);
  KvQuantCalibration uni = km;
  for (int i = 0; i < 4; ++i) uni.enc[i] = uni.dec[i] = -1.0f + (2.0f * i + 1) / 4;
  std::vector<float> x = gaussian(size_t(500) * d, 4), ya(x.size()), yb(x.size());
  for (auto& v : x) v = v * v * v;
  kvquant_roundtrip(km, 0, x.data(), 500, o, ya.data());
  kvquant_roundtrip(uni, 0, x.data(), 500, o, yb.data());
  CHECK(nmse(x.data(), ya.data(), x.size()) < nmse(x.data(), yb.data(), x.size()));
}

TEST_CASE("KVQuant: pre-RoPE keys with RoPE re-applied; error equals the pre-RoPE error", "[formats][kvquant]") {
  const int d = 64, tokens = 300;
  std::vector<float> pre = gaussian(size_t(tokens) * d, 5);
  for (int t = 0; t < tokens; ++t) pre[size_t(t) * d + 3] += 20.0f;  // a biased channel, as real keys have
  KvQuantOptions o;
  o.bits = 3;
  o.outlier_fraction = 0.01;
  const KvQuantCalibration cal = kvquant_calibrate(pre.data(), 1, tokens, d, true, o);
  std::vector<float> y(pre.size());
  const KvQuantHeadStats st = kvquant_roundtrip(cal, 0, pre.data(), tokens, o, y.data());
  CHECK(st.outliers > 0);
  const double e_pre = nmse(pre.data(), y.data(), pre.size());
  std::vector<float> post = pre;
  apply_rope(post.data(), tokens, d, 10000.0);
  apply_rope(y.data(), tokens, d, 10000.0);
  // RoPE rotates pairs of channels: squared error and energy are unchanged (to f32 rounding).
  CHECK(nmse(post.data(), y.data(), post.size()) == Approx(e_pre).epsilon(1e-4));
  CHECK(e_pre < 0.05);
  CHECK(kvquant_static_bits(cal) == 8 * 16 + 32 * 64);
}

TEST_CASE("KVQuant: bad options are one clear error", "[formats][kvquant]") {
  std::vector<float> c(64, 1.0f);
  KvQuantOptions o;
  o.bits = 9;
  CHECK_THROWS_AS(kvquant_calibrate(c.data(), 1, 16, 4, false, o), Error);
  o.bits = 2;
  o.outlier_fraction = 0.7;
  CHECK_THROWS_AS(kvquant_calibrate(c.data(), 1, 16, 4, false, o), Error);
  o.outlier_fraction = 0;
  o.fp16_tokens = 16;
  CHECK_THROWS_AS(kvquant_calibrate(c.data(), 1, 16, 4, false, o), Error);
}
