// SKVQ (reordering, clipped groups, sinks + window) and KVSmooth (scales, RoPE commutation,
// include/exclude) against hand-worked values and closed forms.
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "core/policy/policy.h"
#include "core/quant/kvsmooth.h"
#include "core/quant/quantize_dump.h"
#include "core/quant/skvq.h"
#include "core/synth/synth.h"
#include "core/tensor/rope.h"
#include "core/util/error.h"
#include "tests/tolerances.h"

using namespace kvscope;

TEST_CASE("KVSmooth scales: §8 E (pairs (j, j+4), factor 1)") {
  // One head, head_dim 8; per-channel max |K| as in §8 E, each reached by one token.
  const float m[8] = {1.576f, 15.686f, 1.271f, 1.042f, 1.848f, 13.700f, 1.524f, 1.964f};
  std::vector<float> k(8 * 8, 0.0f);
  for (int c = 0; c < 8; ++c) k[c * 8 + c] = (c % 2 ? -1.0f : 1.0f) * m[c];
  auto s = kvsmooth_scales(k.data(), 1, 8, 8, 1.0);
  const float expect[8] = {1.848f, 15.686f, 1.524f, 1.964f, 1.848f, 15.686f, 1.524f, 1.964f};
  for (int c = 0; c < 8; ++c) CHECK(s[c] == Approx(expect[c]));
  for (int c = 0; c < 8; ++c) CHECK(std::fabs(k[c * 8 + c] / s[c]) <= 1.0f + 1e-6f);
  // factor 2 squares them; a dead pair is clamped, never a division by zero.
  auto s2 = kvsmooth_scales(k.data(), 1, 8, 8, 2.0);
  CHECK(s2[1] == Approx(15.686 * 15.686).epsilon(1e-5));
  std::vector<float> zero(8 * 8, 0.0f);
  CHECK(kvsmooth_scales(zero.data(), 1, 8, 8, 1.0)[0] == 1e-5f);
}

TEST_CASE("KVSmooth: scaling commutes with RoPE and leaves QK^T unchanged") {
  const int T = 16, D = 8;
  std::mt19937 g(3);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> kpre(T * D), qpre(T * D);
  for (auto& x : kpre) x = n(g);
  for (auto& x : qpre) x = n(g);
  std::vector<float> s = {1.848f, 15.686f, 1.524f, 1.964f, 1.848f, 15.686f, 1.524f, 1.964f};
  std::vector<float> a = kpre, b = kpre, q = qpre, qs = qpre;
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < D; ++c) a[t * D + c] /= s[c], qs[t * D + c] *= s[c];
  apply_rope(a.data(), T, D, 10000.0);  // rope(K_pre / s)
  apply_rope(b.data(), T, D, 10000.0);  // rope(K_pre) / s
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < D; ++c) CHECK(a[t * D + c] == Approx(b[t * D + c] / s[c]).epsilon(1e-5));
  apply_rope(q.data(), T, D, 10000.0);
  apply_rope(qs.data(), T, D, 10000.0);
  std::vector<float> k = kpre;
  apply_rope(k.data(), T, D, 10000.0);
  double maxdiff = 0;
  for (int i = 0; i < T; ++i)
    for (int j = 0; j < T; ++j) {
      double l = 0, ls = 0;
      for (int c = 0; c < D; ++c) l += double(q[i * D + c]) * k[j * D + c], ls += double(qs[i * D + c]) * a[j * D + c];
      maxdiff = std::max(maxdiff, std::fabs(l - ls));
    }
  CHECK(maxdiff < 1e-4);
}

TEST_CASE("KVSmooth layer patterns: glob, exclude wins, unmatched pattern is an error") {
  CHECK(glob_match("*", "model.layers.3.self_attn"));
  CHECK(glob_match("model.layers.?.self_attn", "model.layers.3.self_attn"));
  CHECK_FALSE(glob_match("model.layers.?.self_attn", "model.layers.13.self_attn"));
  CHECK(glob_match("model.layers.1*", "model.layers.13.self_attn"));
  SmoothOptions o;
  o.exclude = {"model.layers.0.self_attn"};
  auto on = kvsmooth_layers(o, 3, "p.json");
  CHECK(on == std::vector<bool>{false, true, true});
  o.include = {"model.layers.1.self_attn", "model.layers.0.self_attn"};
  CHECK(kvsmooth_layers(o, 3, "p.json") == std::vector<bool>{false, true, false});
  o.exclude = {"model.layers.7.self_attn"};
  CHECK_THROWS_WITH(kvsmooth_layers(o, 3, "p.json"), Catch::Contains("p.json: kvsmooth pattern 'model.layers.7.self_attn' matched no attention module"));
}

TEST_CASE("KVSmooth makes per-token int4 keys cheaper in attention-logit error on outlier heads") {
  SynthOptions so;
  so.tokens = 512;
  KvDump d = make_synthetic_dump(so);
  auto plain = quantize_dump(d, parse_policy(nlohmann::json::parse(R"({"method": "uniform",
      "k": {"bits": 4, "axis": "token", "symmetric": true}, "v": {"fp16": true}})"), "t"));
  auto smooth = quantize_dump(d, parse_policy(nlohmann::json::parse(R"({"method": "uniform",
      "k": {"bits": 4, "axis": "token", "symmetric": true}, "v": {"fp16": true}, "smooth": {"factor": 1.0}})"), "t"));
  double lp = 0, ls = 0;
  for (size_t i = 0; i < plain.attention.size(); ++i) lp += plain.attention[i].logit_rmse, ls += smooth.attention[i].logit_rmse;
  CHECK(ls < 0.8 * lp);
  CHECK(smooth.k_nmse < plain.k_nmse);
  CHECK(smooth.bits_per_element == plain.bits_per_element);  // folded scales cost nothing at runtime
  auto preset = load_preset("kvsmooth-4");
  REQUIRE(preset.smooth.has_value());
  CHECK(preset.k.bits == 4);
}

TEST_CASE("SKVQ reordering groups channels of similar range") {
  // 64 channels: even ones small (range ~1), odd ones large (range ~20). Consecutive groups of 32
  // mix both; k-means on (min, max) separates them.
  const int T = 256, C = 64;
  std::mt19937 g(5);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(T * C);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) x[t * C + c] = n(g) * (c % 2 ? 20.0f : 1.0f);
  auto r = skvq_calibrate_reorder(x.data(), T, C, 32);
  REQUIRE(r.bounds == std::vector<int>{0, 32, 64});
  for (int i = 0; i < 32; ++i) CHECK(r.perm[i] % 2 == 0);  // small-range cluster first
  for (int i = 32; i < 64; ++i) CHECK(r.perm[i] % 2 == 1);
  CHECK(skvq_calibrate_reorder(x.data(), T, C, 32).perm == r.perm);  // deterministic
  SkvqSpec spec;
  spec.bits = 2;
  spec.sinks = 0;
  spec.window = 0;
  std::vector<float> y1(x.size()), y2(x.size());
  skvq_quantize(x.data(), T, C, r, spec, y1.data(), true);
  skvq_quantize(x.data(), T, C, skvq_identity_groups(C, 32), spec, y2.data(), false);
  double e1 = 0, e2 = 0;
  for (size_t i = 0; i < x.size(); ++i) e1 += (x[i] - y1[i]) * (x[i] - y1[i]), e2 += (x[i] - y2[i]) * (x[i] - y2[i]);
  CHECK(e1 < 0.7 * e2);
}

TEST_CASE("SKVQ quantizer: hand-worked group, sinks and window exact, bit count") {
  // One token, one group of 4: min -1, max 2, alpha 1, 2 bits: s = 1, zp = -1, levels -1, 0, 1, 2.
  std::vector<float> x = {-1.0f, 0.4f, 0.6f, 2.0f}, y(4);
  SkvqSpec spec;
  spec.bits = 2;
  spec.clip_ratio = 1.0;
  spec.sinks = 0;
  spec.window = 0;
  auto r = skvq_quantize(x.data(), 1, 4, skvq_identity_groups(4, 4), spec, y.data(), false);
  CHECK(y == std::vector<float>{-1.0f, 0.0f, 1.0f, 2.0f});
  CHECK(r.bits == 4 * 2 + 32);
  // SKVQ clipping multiplies both ends by alpha: [-0.92, 1.84].
  spec.clip_ratio = 0.92;
  skvq_quantize(x.data(), 1, 4, skvq_identity_groups(4, 4), spec, y.data(), false);
  CHECK(y[0] == Approx(-0.92).epsilon(test::tol::kFp16));
  CHECK(y[3] == Approx(1.84).epsilon(test::tol::kFp16));
  // Sinks and window stay fp16: T = 20, S = 5, W = 8 -> 7 quantized tokens.
  const int T = 20, C = 8;
  std::vector<float> a(T * C), b(T * C);
  std::mt19937 g(1);
  std::normal_distribution<float> n(0, 1);
  for (auto& v : a) v = n(g);
  spec = SkvqSpec{};
  spec.sinks = 5;
  spec.window = 8;
  auto res = skvq_quantize(a.data(), T, C, skvq_identity_groups(C, 4), spec, b.data(), true);
  for (int t : {0, 4, 12, 19})
    for (int c = 0; c < C; ++c) CHECK(b[t * C + c] == round_to_f16(a[t * C + c]));
  CHECK(res.static_bits == 16 * (8 + 2 + 1));
  CHECK(res.bits == 7ull * 8 * 2 + 7ull * 2 * 32 + 13ull * 8 * 16 + res.static_bits);
}

TEST_CASE("skvq-2 preset on a dump: pre-RoPE keys, window and sinks exact after RoPE") {
  SynthOptions so;
  so.layers = 2;
  so.tokens = 300;
  so.planted.clear();
  KvDump d = make_synthetic_dump(so);
  DequantizedKV dq;
  QuantizeOptions qo;
  qo.attention = false;
  auto r = quantize_dump(d, load_preset("skvq-2"), qo, &dq);
  CHECK(r.method == "skvq");
  // Window tokens (last 128) and sinks (first 5) are fp16-exact up to the RoPE of the rounding.
  for (int t : {0, 4, 172, 299})
    for (int c = 0; c < 64; ++c) CHECK(dq.k[0][t * 64 + c] == Approx(d.k(0, 0)[t * 64 + c]).margin(2e-2));
  CHECK(r.k_nmse > 0);
  KvDump no_pre = d;
  for (auto& l : no_pre.layers) l.k_pre_rope.clear();
  CHECK_THROWS_WITH(quantize_dump(no_pre, load_preset("skvq-2"), qo), Catch::Contains("no pre-RoPE keys"));
  auto bad = nlohmann::json::parse(R"({"method": "skvq", "k": {"axis": "channel"}})");
  CHECK_THROWS_WITH(parse_policy(bad, "p.json"), Catch::Contains("$.k: skvq quantizes per token"));
}
