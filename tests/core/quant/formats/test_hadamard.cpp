// Randomized Walsh-Hadamard rotation: the fast transform against the explicit Sylvester matrix
// H[i][j] = (-1)^popcount(i & j), orthonormality, inverse, q.k invariance, non-power-of-two head_dim,
// and what it does for q4_0 on the synthetic demo's planted outlier heads.
#include <catch2/catch.hpp>
#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "core/quant/formats/ggml_blocks.h"
#include "core/quant/formats/hadamard.h"
#include "core/synth/synth.h"
#include "core/util/error.h"

using namespace kvscope;
using namespace kvscope::formats;

namespace {

constexpr double kF32Tol = 1e-6;  // relative error of a few hundred f32 additions, normalized

std::vector<float> gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

double dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

double nmse(const float* a, const float* b, size_t n) {
  double e = 0, r = 0;
  for (size_t i = 0; i < n; ++i) e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), r += double(a[i]) * a[i];
  return e / r;
}

}  // namespace

TEST_CASE("Hadamard: the fast transform equals the Sylvester matrix; the rotation equals (1/sqrt b) H D per block", "[formats][rotation]") {
  for (int n : {2, 8, 64}) {
    std::vector<float> x = gaussian(size_t(n), uint64_t(n)), y = x;
    fwht(y.data(), n);
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < n; ++j) s += (std::popcount(unsigned(i & j)) % 2 ? -1.0 : 1.0) * x[j];
      CHECK(y[i] == Approx(s).margin(1e-5));
    }
  }
  for (int dim : {64, 96}) {
    const HadamardRotation r(dim, 7);
    const int b = r.block();
    CHECK(b == (dim == 64 ? 64 : 32));
    std::vector<float> x = gaussian(size_t(dim), 3), y = x;
    r.rotate(y.data());
    for (int i = 0; i < dim; ++i) {
      const int blk = i / b * b;
      double s = 0;
      for (int j = blk; j < blk + b; ++j)
        s += (std::popcount(unsigned((i - blk) & (j - blk))) % 2 ? -1.0 : 1.0) * r.signs()[j] * x[j];
      CHECK(y[i] == Approx(s / std::sqrt(double(b))).margin(1e-5));
    }
  }
}

TEST_CASE("Hadamard: orthonormal, inverse to f32 rounding, q.k unchanged", "[formats][rotation]") {
  for (int dim : {64, 128, 80}) {
    const HadamardRotation r(dim, 42);
    // Columns of R: rotate the basis vectors; R^T R = I.
    std::vector<float> basis(size_t(dim) * dim, 0.0f);
    for (int i = 0; i < dim; ++i) basis[size_t(i) * dim + i] = 1.0f;
    r.rotate(basis.data(), size_t(dim));
    double worst = 0;
    for (int i = 0; i < dim; ++i)
      for (int j = 0; j < dim; ++j)
        worst = std::max(worst, std::fabs(dot(&basis[size_t(i) * dim], &basis[size_t(j) * dim], dim) - (i == j)));
    CHECK(worst < kF32Tol);
    const size_t rows = 200;
    std::vector<float> q = gaussian(rows * dim, 1), k = gaussian(rows * dim, 2);
    for (size_t i = 0; i < k.size(); i += 17) k[i] *= 50.0f;  // outliers
    std::vector<float> rq = q, rk = k;
    r.rotate(rq.data(), rows);
    r.rotate(rk.data(), rows);
    for (size_t t = 0; t < rows; ++t) {
      const double want = dot(&q[t * dim], &k[t * dim], dim);
      const double scale = std::sqrt(dot(&q[t * dim], &q[t * dim], dim) * dot(&k[t * dim], &k[t * dim], dim));
      CHECK(std::fabs(dot(&rq[t * dim], &rk[t * dim], dim) - want) <= kF32Tol * scale);
    }
    r.unrotate(rk.data(), rows);
    double err = 0, ref = 0;
    for (size_t i = 0; i < k.size(); ++i) err = std::max(err, double(std::fabs(rk[i] - k[i]))), ref = std::max(ref, double(std::fabs(k[i])));
    CHECK(err <= kF32Tol * ref);
  }
}

TEST_CASE("Hadamard: seeds, unsigned variant, head_dim without a power-of-two block", "[formats][rotation]") {
  CHECK(HadamardRotation(64, 1).signs() == HadamardRotation(64, 1).signs());
  CHECK(HadamardRotation(64, 1).signs() != HadamardRotation(64, 2).signs());
  const HadamardRotation plain(64, 1, false);
  for (float s : plain.signs()) CHECK(s == 1.0f);
  CHECK(HadamardRotation(80, 0).block() == 16);
  CHECK_THROWS_AS(HadamardRotation(63, 0), Error);
  CHECK_THROWS_AS(HadamardRotation(0, 0), Error);
}

TEST_CASE("Hadamard: q4_0 K NMSE of every planted outlier head of the demo drops >= 2.5x", "[formats][rotation]") {
  SynthOptions o;  // the demo: Qwen2.5-0.5B shape, planted heads of the kvmix study
  o.layers = 9;    // the planted heads live in layers 0..8
  o.tokens = 1024;
  o.queries = false;
  const KvDump d = make_synthetic_dump(o);
  const int hd = d.shape.head_dim;
  const size_t n = d.head_elems();
  const HadamardRotation r(hd, 0x5EED);
  std::vector<uint8_t> bytes(ggml_row_bytes(GgmlType::Q4_0, n));
  std::vector<float> y(n), rk(n);
  for (const PlantedHead& p : o.planted) {
    const float* k = d.k(p.layer, p.head);
    ggml_quantize_row(GgmlType::Q4_0, k, n, bytes.data());  // rows of 64 = two blocks per token
    ggml_dequantize_row(GgmlType::Q4_0, bytes.data(), n, y.data());
    const double plain = nmse(k, y.data(), n);
    rk.assign(k, k + n);
    r.rotate(rk.data(), size_t(d.shape.tokens));
    ggml_quantize_row(GgmlType::Q4_0, rk.data(), n, bytes.data());
    ggml_dequantize_row(GgmlType::Q4_0, bytes.data(), n, y.data());
    r.unrotate(y.data(), size_t(d.shape.tokens));  // error measured in the original basis
    const double rotated = nmse(k, y.data(), n);
    INFO("layer " << p.layer << " head " << p.head << ": NMSE " << plain << " -> " << rotated);
    CHECK(plain / rotated >= 2.5);
  }
}
