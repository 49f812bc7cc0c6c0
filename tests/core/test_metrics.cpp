// Tensor and attention metrics against a double-precision reference and closed forms.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "core/metrics/attention.h"
#include "core/metrics/attention_sample.h"
#include "core/metrics/tensor_error.h"
#include "tests/tolerances.h"

using namespace kvscope;

TEST_CASE("ErrorSums: hand-worked values") {
  std::vector<float> x = {1, 2, 3, 4}, y = {1, 2, 3, 2};
  ErrorSums e;
  e.add(x.data(), y.data(), 4);
  CHECK(e.err2 == 4);
  CHECK(e.nmse() == Approx(4.0 / 30));
  CHECK(e.mse() == 1.0);
  CHECK(e.max_abs == 2.0);
  CHECK(e.cos() == Approx(22.0 / std::sqrt(30.0 * 18.0)));
  ErrorSums z;
  z.add(x.data(), x.data(), 4);
  CHECK(z.nmse() == 0);
  CHECK(z.cos() == Approx(1.0));
}

TEST_CASE("sample_positions spreads evenly and includes both ends") {
  CHECK(sample_positions(10, 0).size() == 10);
  CHECK(sample_positions(10, 20).size() == 10);
  auto p = sample_positions(4096, 256);
  CHECK(p.size() == 256);
  CHECK(p.front() == 0);
  CHECK(p.back() == 4095);
  CHECK(std::is_sorted(p.begin(), p.end()));
}

TEST_CASE("attention metrics: fast path agrees with the double-precision reference") {
  const int T = 200, D = 16, G = 3;
  std::mt19937 g(4);
  std::normal_distribution<float> n(0, 1);
  std::vector<std::vector<float>> q(G, std::vector<float>(T * D));
  std::vector<float> k(T * D), v(T * D), kq(T * D), vq(T * D);
  for (auto& qq : q)
    for (auto& x : qq) x = 2.0f * n(g);
  for (int i = 0; i < T * D; ++i) {
    k[i] = n(g), v[i] = n(g);
    kq[i] = k[i] + 0.1f * n(g);
    vq[i] = v[i] + 0.05f * n(g);
  }
  std::vector<const float*> qp;
  for (auto& qq : q) qp.push_back(qq.data());
  auto pos = sample_positions(T, 37);
  auto fast = attention_error(qp, k.data(), v.data(), kq.data(), vq.data(), T, D, pos).metrics(0, 0);
  auto ref = attention_error_reference(qp, k.data(), v.data(), kq.data(), vq.data(), T, D, pos).metrics(0, 0);
  CHECK(fast.out_cos_mean == Approx(ref.out_cos_mean).epsilon(1e-5));
  CHECK(fast.out_cos_min == Approx(ref.out_cos_min).epsilon(1e-5));
  CHECK(fast.out_nmse == Approx(ref.out_nmse).epsilon(1e-4));
  CHECK(fast.kl_mean == Approx(ref.kl_mean).epsilon(test::tol::kKlFloat));
  CHECK(fast.prob_cos_mean == Approx(ref.prob_cos_mean).epsilon(1e-5));
  CHECK(fast.logit_rmse == Approx(ref.logit_rmse).epsilon(1e-4));
  CHECK(fast.logit_max_abs == Approx(ref.logit_max_abs).epsilon(1e-4));
  CHECK(ref.kl_mean > 0);
  // Identical caches: no error at all.
  auto same = attention_error(qp, k.data(), v.data(), k.data(), v.data(), T, D, pos).metrics(0, 0);
  CHECK(same.out_nmse == 0);
  CHECK(same.kl_mean == Approx(0).margin(1e-9));
  CHECK(same.out_cos_min == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("auto attention sample: 256 positions up to the demo's shape, fewer under the work budget") {
  // The 4096-token demo (Qwen2.5-0.5B shape) and anything smaller keep 256.
  CHECK(auto_attn_queries(24, 14, 64, 4096) == kDefaultAttnQueries);
  CHECK(auto_attn_queries(5, 8, 8, 512) == kDefaultAttnQueries);
  CHECK(sample_positions(100, auto_attn_queries(5, 8, 8, 100)).size() == 100u);  // all of a short dump
  // Llama-3-8B shape at 8192 tokens: 256 positions would be 5.5e11 multiply-adds.
  const int n = auto_attn_queries(32, 32, 128, 8192);
  CHECK(n < kDefaultAttnQueries);
  CHECK(n >= kMinAutoAttnQueries);
  CHECK(attention_products(32, 32, 128, sample_positions(8192, n)) <= kAttnProductBudget);
  CHECK(attention_products(32, 32, 128, sample_positions(8192, n + 1)) > kAttnProductBudget);
  CHECK(auto_attn_queries(80, 64, 128, 131072) == kMinAutoAttnQueries);  // never below the floor
  // Products count keys up to each position: 1 + 2 + 3 keys, 4 products per key and dimension.
  CHECK(attention_products(1, 1, 2, {0, 1, 2}) == 6 * 2 * 4);
}

TEST_CASE("attention metrics: far-apart positions (few key blocks of very different lengths)") {
  const int T = 300, D = 8, G = 2;
  std::mt19937 g(7);
  std::normal_distribution<float> n(0, 1);
  std::vector<std::vector<float>> q(G, std::vector<float>(T * D));
  std::vector<float> k(T * D), v(T * D), kq(T * D), vq(T * D);
  for (auto& qq : q)
    for (auto& x : qq) x = 1.5f * n(g);
  for (int i = 0; i < T * D; ++i) k[i] = n(g), v[i] = n(g), kq[i] = k[i] + 0.2f * n(g), vq[i] = v[i] + 0.1f * n(g);
  std::vector<const float*> qp;
  for (auto& qq : q) qp.push_back(qq.data());
  for (const std::vector<int>& pos : {std::vector<int>{0, 1, 2, 299}, std::vector<int>{5, 6, 7, 8, 9, 10, 11, 12, 13, 250, 299}}) {
    auto fast = attention_error(qp, k.data(), v.data(), kq.data(), vq.data(), T, D, pos).metrics(0, 0);
    auto ref = attention_error_reference(qp, k.data(), v.data(), kq.data(), vq.data(), T, D, pos).metrics(0, 0);
    CHECK(fast.out_cos_mean == Approx(ref.out_cos_mean).epsilon(1e-5));
    CHECK(fast.out_nmse == Approx(ref.out_nmse).epsilon(1e-4));
    CHECK(fast.kl_mean == Approx(ref.kl_mean).epsilon(test::tol::kKlFloat));
    CHECK(fast.logit_rmse == Approx(ref.logit_rmse).epsilon(1e-4));
  }
}

TEST_CASE("attention metrics: position 0 attends only to itself") {
  // A query at position 0 sees one key: its output is v_0 (or v^_0) whatever the keys.
  const int T = 4, D = 2;
  std::vector<float> q = {1, 0, 0, 1, 1, 1, 2, 0};
  std::vector<float> k = {1, 0, 0, 1, 1, 1, 0, 0}, kq = {5, 5, 0, 1, 1, 1, 0, 0};
  std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8}, vq = v;
  auto s = attention_error({q.data()}, k.data(), v.data(), kq.data(), vq.data(), T, D, {0}).metrics(0, 0);
  CHECK(s.out_nmse == 0);
  CHECK(s.kl_mean == Approx(0).margin(1e-6));  // float rounding of (l - l^) + (l^ - l)
  // Position 1 with keys (1,0),(0,1) and query (0,1): logits (0, 1/sqrt2); changing k0 to (5,5)
  // gives logits (5/sqrt2, 1/sqrt2): KL computed by hand.
  auto s1 = attention_error({q.data()}, k.data(), v.data(), kq.data(), vq.data(), T, D, {1}).metrics(0, 0);
  double l0 = 0, l1 = 1 / std::sqrt(2.0), m0 = 5 / std::sqrt(2.0), m1 = l1;
  double z = std::exp(l0) + std::exp(l1), zh = std::exp(m0) + std::exp(m1);
  double p0 = std::exp(l0) / z, p1 = std::exp(l1) / z, h0 = std::exp(m0) / zh, h1 = std::exp(m1) / zh;
  CHECK(s1.kl_mean == Approx(p0 * std::log(p0 / h0) + p1 * std::log(p1 / h1)).epsilon(1e-5));
}
