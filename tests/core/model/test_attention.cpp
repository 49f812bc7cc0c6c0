// The forward's causal attention kernels (core/model/forward_ops.h) against a plain double
// reference: the fused prefill tiles (online softmax; masks at tile and panel edges, GQA, a
// sliding window, a cache that already holds positions) and the decode loops.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/model/forward_ops.h"

using namespace kvscope;

namespace {

// f32 kernels (exp polynomial rel. error 2e-7, f32 sums over <= 300 keys) vs double, on O(1) values.
constexpr double kAttentionTol = 2e-5;

struct Case {
  int heads, kv_heads, head_dim, n, start, window;
};

double max_error(const Case& c) {
  const int total = c.start + c.n, cap = total + 3;  // cache capacity past the valid positions
  std::mt19937 rng(static_cast<unsigned>(c.head_dim * 131 + c.n * 7 + c.start));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> q(static_cast<size_t>(c.heads) * c.n * c.head_dim), k(static_cast<size_t>(c.kv_heads) * cap * c.head_dim),
      v(k.size()), out(static_cast<size_t>(c.n) * c.heads * c.head_dim, -1.f);
  for (auto& x : q) x = 2.f * nd(rng);  // peaked softmax rows: the running max moves
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  AttentionShape s;
  s.heads = c.heads;
  s.kv_heads = c.kv_heads;
  s.head_dim = c.head_dim;
  s.n = c.n;
  s.start = c.start;
  s.sliding_window = c.window;
  s.kv_head_stride = static_cast<int64_t>(cap) * c.head_dim;
  causal_attention(q.data(), k.data(), v.data(), s, out.data());

  const int G = c.heads / c.kv_heads, d = c.head_dim;
  double worst = 0;
  for (int h = 0; h < c.heads; ++h)
    for (int i = 0; i < c.n; ++i) {
      const int pos = c.start + i, lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
      const float* K = k.data() + (h / G) * s.kv_head_stride;
      const float* V = v.data() + (h / G) * s.kv_head_stride;
      const float* qi = q.data() + (static_cast<size_t>(h) * c.n + i) * d;
      std::vector<double> p(pos + 1, 0.0);
      double mx = -1e300, sum = 0;
      for (int t = lo; t <= pos; ++t) {
        double a = 0;
        for (int j = 0; j < d; ++j) a += double(qi[j]) * K[t * d + j];
        p[t] = a / std::sqrt(double(d));
        mx = std::max(mx, p[t]);
      }
      for (int t = lo; t <= pos; ++t) sum += (p[t] = std::exp(p[t] - mx));
      for (int j = 0; j < d; ++j) {
        double o = 0;
        for (int t = lo; t <= pos; ++t) o += p[t] / sum * V[t * d + j];
        worst = std::max(worst, std::abs(o - out[(static_cast<size_t>(i) * c.heads + h) * d + j]));
      }
    }
  return worst;
}

}  // namespace

TEST_CASE("causal attention equals a double reference (fused prefill tiles, decode loops)", "[model][attention]") {
  const std::vector<Case> cases = {
      {8, 4, 32, 100, 0, 0},    // tinystories-llama-8L heads; 100 = 16 tiles of 6 + 4 rows
      {14, 2, 64, 37, 0, 0},    // Qwen2.5-0.5B heads (GQA 7)
      {4, 2, 40, 23, 11, 0},    // head_dim % 16 == 8; a cache that already holds 11 positions
      {2, 1, 128, 50, 30, 0},   // head_dim 128, keys past a panel edge
      {4, 4, 32, 64, 20, 17},   // sliding window: rows whose first panels are fully masked
      {4, 2, 24, 9, 0, 5},      // window smaller than a tile
      {4, 2, 12, 30, 3, 0},     // head_dim % 8 != 0: the sgemm path
      {8, 4, 32, 1, 200, 0},    // decode, one position
      {8, 4, 32, 3, 40, 7},     // decode, three positions, window
  };
  for (const Case& c : cases) {
    INFO("heads " << c.heads << "/" << c.kv_heads << " head_dim " << c.head_dim << " n " << c.n << " start " << c.start
                  << " window " << c.window);
    CHECK(max_error(c) < kAttentionTol);
  }
}
