// Uniform int-N quantizer: hand-worked examples of ALGORITHMS.md §8 (float64 golden values),
// closed forms, fast path == reference path, packing.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "core/quant/quantized_tensor.h"
#include "core/util/error.h"
#include "tests/tolerances.h"

using namespace kvscope;

namespace {

// §8 X: 4 tokens x 8 channels.
const std::vector<float> X = {0.12f, -0.50f, 1.30f,  0.07f,  -2.10f, 0.33f,  0.90f,  -0.04f,
                              0.40f, 0.10f,  -0.75f, 1.10f,  0.05f,  -0.62f, 1.75f,  0.20f,
                              -1.20f, 0.85f, 0.00f,  -0.30f, 0.64f,  2.40f,  -0.15f, -0.90f,
                              0.05f, -0.05f, 0.55f,  0.95f,  -1.45f, 0.18f,  0.30f,  3.60f};

std::vector<float> dequant(const QuantizedTensor& t) {
  std::vector<float> y(static_cast<size_t>(t.rows) * t.cols);
  t.dequantize(y.data());
  return y;
}

double mse(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s / a.size();
}

double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), r += double(a[i]) * a[i];
  return e / r;
}

TensorQuant spec(int bits, Axis axis, int group, bool sym = false) {
  TensorQuant q;
  q.bits = bits;
  q.axis = axis;
  q.group_size = group;
  q.symmetric = sym;
  q.scale_dtype = DType::F32;  // the golden values use unrounded scales
  return q;
}

std::vector<float> gaussian(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace

TEST_CASE("§8 A: int4 asymmetric per-token, group 4, float zero point") {
  auto t = quantize_tensor(X.data(), 4, 8, spec(4, Axis::Token, 4));
  const int codes[4][8] = {{5, 0, 15, 5, 0, 12, 15, 10}, {9, 7, 0, 15, 4, 0, 15, 5},
                           {0, 15, 9, 7, 7, 15, 3, 0},   {2, 0, 9, 15, 0, 5, 5, 15}};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) CHECK(t.code_at(r, c) == codes[r][c]);
  CHECK(t.scales[0] == Approx(0.12).epsilon(1e-6));
  CHECK(t.scales[7] == Approx(0.336667).epsilon(1e-5));
  CHECK(t.zeros[3] == Approx(-0.62).epsilon(1e-6));
  auto y = dequant(t);
  CHECK(mse(X, y) == Approx(9.5415e-4).epsilon(1e-4));
  CHECK(nmse(X, y) == Approx(7.9572e-4).epsilon(1e-4));
  double mx = 0;
  for (size_t i = 0; i < X.size(); ++i) mx = std::max(mx, std::fabs(double(X[i]) - y[i]));
  CHECK(mx == Approx(0.09).epsilon(1e-4));
  // 4-bit codes + one f32 scale and one f32 min per group of 4: 4 + 64/4 = 20 bits/element.
  CHECK(t.total_bits() == 32 * 4 + 8 * 64);
  auto t16 = quantize_tensor(X.data(), 4, 8, [] { auto q = spec(4, Axis::Token, 4); q.scale_dtype = DType::F16; return q; }());
  CHECK(double(t16.total_bits()) / 32 == 12.0);  // §8 A: 4 + 32/4 with fp16 metadata
}

TEST_CASE("§8 A2: integer zero point, MSE 3x the float-min convention") {
  auto q = spec(4, Axis::Token, 4);
  q.integer_zero_point = true;
  auto t = quantize_tensor(X.data(), 4, 8, q);
  const float zps[8] = {4, 10, 6, 4, 9, 4, 1, 4};
  for (int i = 0; i < 8; ++i) CHECK(t.zeros[i] == zps[i]);
  const int row0[8] = {5, 0, 15, 5, 0, 12, 14, 10};
  for (int c = 0; c < 8; ++c) CHECK(t.code_at(0, c) == row0[c]);
  CHECK(mse(X, dequant(t)) == Approx(2.9051e-3).epsilon(test::tol::kPrinted));
}

TEST_CASE("§8 B: int4 per-channel over the 4 tokens (KIVI key layout)") {
  auto t = quantize_tensor(X.data(), 4, 8, spec(4, Axis::Channel, 4));
  const int codes[4][8] = {{12, 0, 15, 4, 0, 5, 8, 3}, {15, 7, 0, 15, 12, 0, 15, 4},
                           {0, 15, 5, 0, 15, 15, 0, 0}, {12, 5, 10, 13, 4, 4, 4, 15}};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) CHECK(t.code_at(r, c) == codes[r][c]);
  const float mins[8] = {-1.2f, -0.5f, -0.75f, -0.3f, -2.1f, -0.62f, -0.15f, -0.9f};
  for (int c = 0; c < 8; ++c) CHECK(t.zeros[c] == mins[c]);
  auto y = dequant(t);
  CHECK(mse(X, y) == Approx(1.2910e-3).epsilon(1e-4));
  CHECK(nmse(X, y) == Approx(1.0766e-3).epsilon(1e-4));
}

// Truncation toward zero, the classic bug (§0.2), written independently of the library.
static double truncation_mse(const std::vector<float>& x, int rows, int cols, bool per_token) {
  double err = 0;
  for (int r = 0; r < rows; ++r) {
    double amax = 0;
    for (int c = 0; c < cols; ++c)
      for (int rr = per_token ? r : 0; rr < (per_token ? r + 1 : rows); ++rr) amax = std::max(amax, std::fabs(double(x[rr * cols + c])));
    float inv = float(127.0 / amax);
    for (int c = 0; c < cols; ++c) {
      float v = x[r * cols + c];
      int8_t q = static_cast<int8_t>(v * inv);  // truncates
      double d = v - q / inv;
      err += d * d;
    }
  }
  return err / x.size();
}

TEST_CASE("§8 C: symmetric int8 (kvmix), rint vs truncation") {
  auto q = spec(8, Axis::Head, 0, true);
  q.inverse_scale = true;
  auto g = quantize_tensor(X.data(), 4, 8, q);
  CHECK(mse(X, dequant(g)) == Approx(7.4595e-5).epsilon(test::tol::kPrinted));
  q.axis = Axis::Token;
  auto t = quantize_tensor(X.data(), 4, 8, q);
  CHECK(mse(X, dequant(t)) == Approx(3.5329e-5).epsilon(test::tol::kPrinted));
  const float inv[4] = {60.4762f, 72.5714f, 52.9167f, 35.2778f};
  for (int i = 0; i < 4; ++i) CHECK(t.scales[i] == Approx(inv[i]).epsilon(1e-5));
  const int row0[8] = {7, -30, 79, 4, -127, 20, 54, -2};
  for (int c = 0; c < 8; ++c) CHECK(t.code_at(0, c) == row0[c]);
  // The independent truncating quantizer reproduces the §8 C truncation column.
  CHECK(truncation_mse(X, 4, 8, false) == Approx(2.6473e-4).epsilon(test::tol::kPrinted));
  CHECK(truncation_mse(X, 4, 8, true) == Approx(1.2783e-4).epsilon(test::tol::kPrinted));
}

TEST_CASE("rounding is round-half-to-even, never truncation or half-away") {
  // rint_small equals nearbyint on random values and on exact ties.
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-300.0f, 300.0f);
  for (int i = 0; i < 100000; ++i) {
    float v = u(gen);
    REQUIRE(rint_small(v) == std::nearbyint(v));
  }
  for (float v : {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -127.5f}) CHECK(rint_small(v) == std::nearbyint(v));
  CHECK(rint_small(2.5f) == 2.0f);
  CHECK(rint_small(-2.5f) == -2.0f);
  // A group whose values sit exactly on half steps: x / s = 0.5, 1.5, 2.5, -2.5 with s = 1.
  TensorQuant q = spec(4, Axis::Token, 0, true);  // qmax 7, s = amax / 7 = 1 for amax 7
  std::vector<float> x = {0.5f, 1.5f, 2.5f, -2.5f, 7.0f, 3.5f, -0.5f, 0.0f};
  auto t = quantize_tensor(x.data(), 1, 8, q);
  REQUIRE(t.scales[0] == 1.0f);
  const int expect[8] = {0, 2, 2, -2, 7, 4, 0, 0};
  for (int c = 0; c < 8; ++c) CHECK(t.code_at(0, c) == expect[c]);
}

TEST_CASE("closed form: int8 per-token error matches the uniform-noise prediction") {
  const int T = 2048, D = 64;
  auto x = gaussian(size_t(T) * D, 11);
  auto q = spec(8, Axis::Token, 0, true);
  auto t = quantize_tensor(x.data(), T, D, q);
  auto y = dequant(t);
  // Prediction: each element's error is uniform on [-s/2, s/2] -> s^2/12, s = absmax/127 per token.
  double predicted = 0;
  for (int r = 0; r < T; ++r) {
    double amax = 0;
    for (int c = 0; c < D; ++c) amax = std::max(amax, std::fabs(double(x[r * D + c])));
    double s = amax / 127;
    predicted += D * s * s / 12;
  }
  predicted /= x.size();
  CHECK(mse(x, y) == Approx(predicted).epsilon(0.10));
  // Nearest rounding ~4x lower MSE than truncation on the same data (theory: Δ²/12 vs Δ²/3).
  double ratio = truncation_mse(x, T, D, true) / mse(x, y);
  CHECK(ratio > 3.5);
  CHECK(ratio < 4.5);
}

TEST_CASE("NMSE decreases monotonically with bits") {
  auto x = gaussian(256 * 64, 3);
  for (Axis axis : {Axis::Token, Axis::Channel, Axis::Head}) {
    double prev = INFINITY;
    for (int bits = 1; bits <= 8; ++bits) {
      auto t = quantize_tensor(x.data(), 256, 64, spec(bits, axis, 32));
      double e = nmse(x, dequant(t));
      CHECK(e < prev);
      prev = e;
    }
    CHECK(prev < 1e-4);
  }
}

TEST_CASE("clip search never loses to alpha = 1 and finds the brute-force optimum") {
  // Heavy-tailed group: one outlier makes clipping worthwhile at low bits.
  std::vector<float> x = gaussian(128, 5);
  x[17] = 9.0f;
  for (int bits : {2, 3}) {
    auto fixed = spec(bits, Axis::Token, 0);
    auto search = fixed;
    search.clip_search = true;
    search.clip_step = 0.05;
    double e_fixed = mse(x, dequant(quantize_tensor(x.data(), 1, 128, fixed)));
    double e_search = mse(x, dequant(quantize_tensor(x.data(), 1, 128, search)));
    double best = INFINITY;
    for (int k = 0; k <= 10; ++k) {
      auto q = fixed;
      q.clip_ratio = 1.0 - 0.05 * k;
      best = std::min(best, mse(x, dequant(quantize_tensor(x.data(), 1, 128, q))));
    }
    CHECK(e_search <= e_fixed);
    CHECK(e_search == Approx(best).epsilon(1e-9));
    CHECK(e_search < 0.9 * e_fixed);
  }
}

TEST_CASE("fast path equals the reference implementation for every configuration") {
  auto x = gaussian(300 * 40, 9, 2.0f);
  x[5] = 0;  // make sure constant and outlier groups appear
  for (int c = 0; c < 40; ++c) x[200 * 40 + c] = 1.25f;
  x[123] = 40.0f;
  for (int bits = 1; bits <= 8; ++bits)
    for (Axis axis : {Axis::Token, Axis::Channel, Axis::Head})
      for (int group : {0, 7, 32})
        for (int mode = 0; mode < 4; ++mode) {
          TensorQuant q = spec(bits, axis, group, mode >= 2);
          if (q.symmetric && bits < 2) continue;
          q.integer_zero_point = mode == 1;
          q.inverse_scale = mode == 3;
          q.scale_dtype = (bits % 2) ? DType::F16 : DType::F32;
          q.clip_search = bits == 3 && group == 7;
          q.clip_ratio = bits == 4 ? 0.9 : 1.0;
          for (auto [head, tail] : {std::pair{0, 0}, std::pair{5, 13}}) {
            INFO("bits " << bits << " axis " << int(axis) << " group " << group << " mode " << mode << " fp " << head);
            auto fast = quantize_tensor(x.data(), 300, 40, q, head, tail);
            auto ref = quantize_tensor_reference(x.data(), 300, 40, q, head, tail);
            REQUIRE(fast.codes == ref.codes);
            REQUIRE(fast.scales == ref.scales);
            REQUIRE(fast.zeros == ref.zeros);
            REQUIRE(fast.fp16_rows == ref.fp16_rows);
            REQUIRE(fast.total_bits() == ref.total_bits());
            // The reconstruction produced while encoding is exactly what the decoder gives.
            std::vector<float> recon(300 * 40), dec(300 * 40);
            quantize_tensor(x.data(), 300, 40, q, head, tail, recon.data());
            fast.dequantize(dec.data());
            REQUIRE(recon == dec);
          }
        }
}

TEST_CASE("bits accounting is exact: codes, scales, zero points, fp16 rows") {
  auto x = gaussian(100 * 64, 1);
  TensorQuant q = spec(3, Axis::Token, 32);
  q.scale_dtype = DType::F16;
  auto t = quantize_tensor(x.data(), 100, 64, q, 2, 10);
  // 88 quantized rows x 64 x 3 bits, 88 x 2 groups x (16 + 16), 12 fp16 rows x 64 x 16.
  CHECK(t.code_bits() == 88ull * 64 * 3);
  CHECK(t.meta_bits() == 88ull * 2 * 32);
  CHECK(t.fp_bits() == 12ull * 64 * 16);
  CHECK(t.codes.size() == (88ull * 64 * 3 + 7) / 8);  // really packed
  CHECK(t.static_bits() == 0);
  q.axis = Axis::Head;
  q.symmetric = true;
  auto h = quantize_tensor(x.data(), 100, 64, q);
  CHECK(h.meta_bits() == 16);
  CHECK(h.static_bits() == 16);
  // Kept rows come back exactly (as fp16).
  auto y = dequant(t);
  for (int r : {0, 1, 90, 99})
    for (int c = 0; c < 64; ++c) CHECK(y[r * 64 + c] == f16_to_f32(f32_to_f16(x[r * 64 + c])));
}

TEST_CASE("packing round trips for every width and matches a hand-packed byte") {
  std::mt19937 g(2);
  for (int bits = 1; bits <= 8; ++bits) {
    std::vector<uint8_t> codes(1001);
    for (auto& c : codes) c = static_cast<uint8_t>(g() & ((1u << bits) - 1));
    std::vector<uint8_t> packed(packed_bytes(codes.size(), bits));
    pack_codes(codes.data(), codes.size(), bits, packed.data());
    std::vector<uint8_t> back(codes.size());
    unpack_codes(packed.data(), 0, codes.size(), bits, back.data());
    CHECK(back == codes);
    std::vector<uint8_t> mid(10);
    unpack_codes(packed.data(), 333, 10, bits, mid.data());
    CHECK(std::equal(mid.begin(), mid.end(), codes.begin() + 333));
  }
  uint8_t codes[4] = {1, 2, 3, 0}, out[1];
  pack_codes(codes, 4, 2, out);
  CHECK(out[0] == 0x39);  // 0b00'11'10'01, LSB first
  uint8_t c3[3] = {5, 7, 1}, o3[2];
  pack_codes(c3, 3, 3, o3);
  CHECK(o3[0] == (5 | (7 << 3) | ((1 & 3) << 6)));
  CHECK(o3[1] == 0);
}

TEST_CASE("invalid quantizer settings are errors, not crashes") {
  std::vector<float> x(64, 1.0f);
  auto bad = spec(9, Axis::Token, 0);
  CHECK_THROWS_WITH(quantize_tensor(x.data(), 1, 64, bad), Catch::Contains("bits must be"));
  auto sym1 = spec(1, Axis::Token, 0, true);
  CHECK_THROWS_WITH(quantize_tensor(x.data(), 1, 64, sym1), Catch::Contains("at least 2 bits"));
  auto ok = spec(4, Axis::Token, 0);
  CHECK_THROWS(quantize_tensor(x.data(), 1, 64, ok, 1, 1));
  // NaN input does not crash and does not produce out-of-range codes.
  x[3] = NAN;
  auto t = quantize_tensor(x.data(), 1, 64, ok);
  CHECK(t.code_at(0, 3) >= 0);
}
