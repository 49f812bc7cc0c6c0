// TurboQuant / QJL: codebooks against closed forms (uniform density at d = 3; the Gaussian
// Lloyd-Max quantizer for large d, Max 1960), MSE of the vector quantizer, unbiasedness of the
// inner-product estimates over 1e5 independent draws, exact bit counts.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "core/quant/formats/lloyd.h"
#include "core/quant/formats/turboquant.h"
#include "core/util/error.h"

using namespace kvscope;
using namespace kvscope::formats;

namespace {

std::vector<float> gaussian(int n, std::mt19937_64& g) {
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

double dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

struct MeanSe {
  double mean, se;
};
MeanSe mean_se(const std::vector<double>& e) {
  double m = 0, v = 0;
  for (double x : e) m += x;
  m /= e.size();
  for (double x : e) v += (x - m) * (x - m);
  v /= (e.size() - 1);
  return {m, std::sqrt(v / e.size())};
}

// Random key with a heavy channel and a query correlated with it (q = k/|k| + noise): a biased
// estimator of q.k shows up as a mean error of the sign of q.k.
void draw_pair(int d, std::mt19937_64& g, std::vector<float>* q, std::vector<float>* k) {
  *k = gaussian(d, g);
  (*k)[0] *= 8.0f;
  *q = gaussian(d, g);
  const double nk = std::sqrt(dot(k->data(), k->data(), d));
  for (int i = 0; i < d; ++i) (*q)[i] = 0.3f * (*q)[i] + float((*k)[i] / nk);
}

}  // namespace

TEST_CASE("TurboQuant codebooks: uniform density at d = 3, Gaussian Lloyd-Max for large d", "[formats][turboquant]") {
  // d = 3: one coordinate of a random unit vector is uniform on [-1, 1]; Lloyd-Max levels are the
  // cell midpoints -1 + (2i + 1)/k.
  for (int bits : {1, 2, 3}) {
    const auto& c = sphere_coordinate_codebook(3, bits);
    const int k = 1 << bits;
    REQUIRE(int(c.size()) == k);
    for (int i = 0; i < k; ++i) CHECK(c[i] == Approx(-1.0 + (2.0 * i + 1) / k).margin(1e-4));
  }
  // d large: N(0, 1/d); sqrt(d) * levels -> the Gaussian Lloyd-Max levels (Max 1960), and d * MSE ->
  // its distortion (TurboQuant Thm 1 quotes 0.36, 0.117, 0.03, 0.009 for b = 1..4).
  const int d = 4096;
  const double sd = std::sqrt(double(d));
  const std::vector<std::vector<double>> levels = {{0.7979}, {0.4528, 1.5104}, {0.2451, 0.7560, 1.3440, 2.1520}};
  const double mse[4] = {0.3634, 0.1175, 0.03454, 0.009497};
  constexpr double kLevelTol = 2e-3;  // finite-d deviation (~1/d) and grid resolution
  for (int bits = 1; bits <= 4; ++bits) {
    const auto& c = sphere_coordinate_codebook(d, bits);
    const int k = 1 << bits;
    for (int i = 0; i < k; ++i) CHECK(c[i] == Approx(-c[k - 1 - i]).margin(1e-7));  // symmetric
    if (bits <= 3)
      for (int i = 0; i < k / 2; ++i) CHECK(c[k / 2 + i] * sd == Approx(levels[bits - 1][i]).margin(kLevelTol));
    CHECK(sphere_coordinate_mse(d, c) * d == Approx(mse[bits - 1]).epsilon(5e-3));
  }
}

TEST_CASE("TurboQuantMse: squared error of unit vectors is d times the per-coordinate distortion", "[formats][turboquant]") {
  const int d = 64;
  std::mt19937_64 g(5);
  for (int bits : {1, 2, 3}) {
    const TurboQuantMse tq(d, bits, 11);
    const double want = d * sphere_coordinate_mse(d, tq.codebook());
    std::vector<uint8_t> idx(d);
    std::vector<float> y(d);
    double err = 0;
    const int n = 2000;
    for (int t = 0; t < n; ++t) {
      std::vector<float> x = gaussian(d, g);
      const double nx = std::sqrt(dot(x.data(), x.data(), d));
      for (auto& v : x) v = float(v / nx);
      const float norm = tq.encode(x.data(), idx.data());
      tq.decode(idx.data(), norm, y.data());
      for (int i = 0; i < d; ++i) err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    }
    CHECK(err / n == Approx(want).epsilon(0.05));  // 2000 vectors: ~2% sampling error
  }
}

TEST_CASE("TurboQuantProd and QJL: inner-product estimates are unbiased (1e5 independent draws)", "[formats][turboquant]") {
  // Each pair draws a fresh (q, k) and a fresh quantizer seed, so the mean is over everything the
  // estimator is unbiased over. Pass: |mean error| <= 3 standard errors. The MSE-only quantizer is
  // biased (it shrinks q.k), which the same test detects: it shows the test can fail.
  const int d = 8, n = 100000;  // small d keeps 1e5 fresh quantizers cheap; unbiasedness holds at any d
  std::mt19937_64 g(2026);
  std::vector<double> e_prod(n), e_qjl(n), e_mse(n);
  std::vector<float> q, k, y(d);
  std::vector<uint8_t> idx(d), signs(2 * d);
  TurboCode code;
  for (int t = 0; t < n; ++t) {
    draw_pair(d, g, &q, &k);
    const double truth = dot(q.data(), k.data(), d);
    const TurboQuantProd prod(d, 2, 1000 + t);
    prod.encode(k.data(), &code);
    prod.decode(code, y.data());
    e_prod[t] = dot(q.data(), y.data(), d) - truth;
    const Qjl qjl(d, 2 * d, 7000000 + t);
    const float norm = qjl.encode(k.data(), signs.data());
    e_qjl[t] = qjl.estimate_dot(q.data(), signs.data(), norm) - truth;
    const TurboQuantMse mse(d, 1, 1000 + t);
    const float nm = mse.encode(k.data(), idx.data());
    mse.decode(idx.data(), nm, y.data());
    e_mse[t] = dot(q.data(), y.data(), d) - truth;
  }
  const MeanSe p = mean_se(e_prod), j = mean_se(e_qjl), m = mean_se(e_mse);
  INFO("prod mean " << p.mean << " se " << p.se << "; qjl mean " << j.mean << " se " << j.se << "; mse-only mean "
                    << m.mean << " se " << m.se);
  CHECK(std::fabs(p.mean) <= 3 * p.se);
  CHECK(std::fabs(j.mean) <= 3 * j.se);
  CHECK(m.mean < -10 * m.se);
}

TEST_CASE("QJL: the decoded vector's inner product is the estimator", "[formats][turboquant]") {
  const int d = 32;
  std::mt19937_64 g(9);
  const Qjl qjl(d, 64, 3);
  std::vector<float> q = gaussian(d, g), k = gaussian(d, g), y(d);
  std::vector<uint8_t> s(64);
  const float norm = qjl.encode(k.data(), s.data());
  qjl.decode(s.data(), norm, y.data());
  CHECK(dot(q.data(), y.data(), d) == Approx(qjl.estimate_dot(q.data(), s.data(), norm)).epsilon(1e-5));
}

TEST_CASE("TurboQuant: exact bits per vector, norms included; the fractional-bit split", "[formats][turboquant]") {
  CHECK(TurboQuantMse(128, 3, 1).bits_per_vector() == 128 * 3 + 16);
  CHECK(TurboQuantProd(128, 3, 1).bits_per_vector() == 128 * 2 + 16 + 128 + 16);
  CHECK(Qjl(128, 256, 1).bits_per_vector() == 256 + 16);
  // 2.5 bits at d = 128: 32 outlier channels at 4 bits, 96 at 2 bits ((32*4 + 96*2)/128 = 2.5); two norms.
  std::vector<int> out;
  for (int i = 0; i < 32; ++i) out.push_back(4 * i);
  const TurboQuantSplit s25(128, out, 4, 2, false, 1);
  CHECK(s25.bits_per_vector() == 32 * 4 + 96 * 2 + 2 * 16);
  CHECK(s25.static_bits() == 128);
  const TurboQuantSplit p25(128, out, 4, 2, true, 1);
  CHECK(p25.bits_per_vector() == 32 * 4 + 96 * 2 + 4 * 16);
  CHECK_THROWS_AS(TurboQuantSplit(128, {5}, 3, 2, false, 1), Error);
  CHECK_THROWS_AS(TurboQuantSplit(128, {5, 5}, 3, 2, false, 1), Error);
  CHECK_THROWS_AS(TurboQuantProd(64, 1, 1), Error);
  // The split quantizer reconstructs each part in place; the outlier channels are found by RMS.
  std::mt19937_64 g(4);
  const int rows = 64;
  std::vector<float> x = gaussian(rows * 128, g), y(x.size());
  for (int t = 0; t < rows; ++t)
    for (int c : out) x[size_t(t) * 128 + c] *= 20.0f;
  CHECK(top_rms_channels(x.data(), rows, 128, 32) == out);
  for (int t = 0; t < rows; ++t) s25.roundtrip(&x[size_t(t) * 128], &y[size_t(t) * 128]);
  double e = 0, r = 0;
  for (size_t i = 0; i < x.size(); ++i) e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]), r += double(x[i]) * x[i];
  CHECK(e / r < 0.15);  // 2-3 bits per coordinate: the per-coordinate distortions are 0.117 and 0.035
}
