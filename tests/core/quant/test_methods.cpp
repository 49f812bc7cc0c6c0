// KIVI, kvmix and whole-dump quantization: accounting tables, residual tokens, outlier selection.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/policy/policy.h"
#include "core/quant/head_plan.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"
#include "core/tensor/dtype.h"

using namespace kvscope;

namespace {

// The synthetic dump as stored in a file: values rounded to fp16 like a real fp16 cache.
KvDump demo(int tokens, bool queries = true) {
  SynthOptions o;
  o.tokens = tokens;
  o.queries = queries;
  o.k_pre_rope = false;
  KvDump d = make_synthetic_dump(o);
  for (auto& l : d.layers)
    for (auto* t : {&l.k, &l.v, &l.q})
      for (auto& x : *t) x = round_to_f16(x);
  return d;
}

const KvDump& demo1024() {
  static KvDump d = demo(1024);
  return d;
}

QuantizeOptions no_attention() {
  QuantizeOptions o;
  o.attention = false;
  return o;
}

}  // namespace

TEST_CASE("kvmix bytes/token reproduce the study's table on the Qwen2.5-0.5B shape") {
  const KvDump& d = demo1024();
  auto r1 = quantize_dump(d, load_preset("kvmix-1"), no_attention());
  auto r2 = quantize_dump(d, load_preset("kvmix-2"), no_attention());
  auto r3 = quantize_dump(d, load_preset("kvmix-3"), no_attention());
  auto r0 = quantize_dump(d, load_preset("fp16"), no_attention());
  CHECK(r0.bytes_per_token == 12288.0);
  CHECK(r1.bytes_per_token == 6144.0);
  CHECK(r2.bytes_per_token == 6528.0);
  CHECK(r3.bytes_per_token == 6720.0);
  CHECK(r0.fp16_bytes_per_token == 12288.0);
  // The per-head global scales are per-cache constants, reported apart: 24 x 2 x 2 fp32 scales.
  CHECK(r1.static_bytes == 24 * 2 * 2 * 4);
  CHECK(r2.static_bytes == 0);
  CHECK(r2.bits_per_element == 8.5);
}

TEST_CASE("kvmix-3's automatic outlier selection finds the study's six heads") {
  const KvDump& d = demo1024();
  Policy p = load_preset("kvmix-3");
  auto heads = select_outlier_heads(d, p.outliers);
  std::vector<std::pair<int, int>> expect = {{0, 0}, {0, 1}, {1, 1}, {2, 0}, {2, 1}, {8, 0}};
  CHECK(heads == expect);
  // Ranking by strat1 K MSE follows the planted max |K| order (§6.2).
  auto mse = strat1_k_mse(d);
  CHECK(mse[8 * 2 + 0] > mse[1 * 2 + 1]);
  CHECK(mse[1 * 2 + 1] > mse[2 * 2 + 1]);
  // Other rules: a fixed count and an explicit list.
  OutlierSelect count;
  count.rule = OutlierSelect::Rule::Count;
  count.count = 6;
  CHECK(select_outlier_heads(d, count) == expect);
  auto r3 = quantize_dump(d, p, no_attention());
  int fp16_k = 0;
  for (auto& h : r3.per_head) fp16_k += h.kind == 'k' && h.full_precision;
  CHECK(fp16_k == 6);
}

TEST_CASE("KIVI bits/element follow §2.4 and §8 G") {
  // §8 G: KIVI-2, G = 32, R = 128, D = 128.
  SynthOptions o;
  o.layers = 1;
  o.kv_heads = 1;
  o.q_heads = 1;
  o.head_dim = 128;
  o.planted.clear();
  o.k_pre_rope = false;
  o.queries = false;
  for (int T : {4096, 4097, 100}) {
    o.tokens = T;
    auto r = quantize_dump(make_synthetic_dump(o), load_preset("kivi-2"), no_attention());
    int rk = T < 128 ? T : T % 128, rv = std::min(T, 128);
    double bk = ((T - rk) * 3.0 + 16.0 * rk) / T, bv = ((T - rv) * 3.0 + 16.0 * rv) / T;
    CHECK(r.k_bits_per_element == Approx(bk).epsilon(1e-12));
    CHECK(r.v_bits_per_element == Approx(bv).epsilon(1e-12));
    if (T == 4096) {
      CHECK(r.k_bits_per_element == 3.0);
      CHECK(r.v_bits_per_element == 3.40625);
    }
    if (T == 4097) CHECK(r.k_bits_per_element == Approx(3.00317).epsilon(1e-5));
  }
}

TEST_CASE("KIVI residual tokens are bit-exact and the quantized ones are not") {
  KvDump d = demo(300, false);
  DequantizedKV dq;
  auto r = quantize_dump(d, load_preset("kivi-2"), no_attention(), &dq);
  const int T = 300, D = 64;
  const int rk = T % 128, rv = 128;  // 44 fp16 keys (T mod R), 128 fp16 values
  for (int l : {0, 8, 23})
    for (int h = 0; h < 2; ++h) {
      const float* k = d.k(l, h);
      const float* kq = dq.k[l].data() + size_t(h) * T * D;
      const float* v = d.v(l, h);
      const float* vq = dq.v[l].data() + size_t(h) * T * D;
      for (int t = T - rk; t < T; ++t)
        for (int c = 0; c < D; ++c) REQUIRE(kq[t * D + c] == k[t * D + c]);
      for (int t = T - rv; t < T; ++t)
        for (int c = 0; c < D; ++c) REQUIRE(vq[t * D + c] == v[t * D + c]);
      int changed_k = 0, changed_v = 0;
      for (int i = 0; i < (T - rk) * D; ++i) changed_k += kq[i] != k[i];
      for (int i = 0; i < (T - rv) * D; ++i) changed_v += vq[i] != v[i];
      CHECK(changed_k > (T - rk) * D / 2);
      CHECK(changed_v > (T - rv) * D / 2);
    }
  CHECK(r.k_nmse > 0);
}

TEST_CASE("the fp16 preset is lossless: attention cosine 1, NMSE 0") {
  KvDump d = demo(256);
  auto r = quantize_dump(d, load_preset("fp16"), QuantizeOptions{});
  CHECK(r.k_nmse == 0);
  CHECK(r.v_nmse == 0);
  CHECK(r.attn_nmse == 0);
  CHECK(r.attn_cos_mean == Approx(1.0).epsilon(1e-12));
  CHECK(r.attn_cos_min == Approx(1.0).epsilon(1e-12));
  CHECK(r.attn_kl_mean == Approx(0.0).margin(1e-12));
  CHECK(r.bits_per_element == 16.0);
  CHECK(r.attention.size() == 24 * 2);
}

TEST_CASE("more bits, less attention error; kvmix-3 protects the outlier layers") {
  KvDump d = demo(512);
  auto u2 = quantize_dump(d, load_preset("uniform-2"), QuantizeOptions{});
  auto u4 = quantize_dump(d, load_preset("uniform-4"), QuantizeOptions{});
  auto u8 = quantize_dump(d, load_preset("uniform-8"), QuantizeOptions{});
  CHECK(u2.attn_nmse > u4.attn_nmse);
  CHECK(u4.attn_nmse > u8.attn_nmse);
  CHECK(u2.attn_cos_mean < u4.attn_cos_mean);
  CHECK(u2.bits_per_element == 3.0);  // 2 + 32/32
  auto k1 = quantize_dump(d, load_preset("kvmix-1"), QuantizeOptions{});
  auto k3 = quantize_dump(d, load_preset("kvmix-3"), QuantizeOptions{});
  CHECK(k3.k_nmse < k1.k_nmse);
  CHECK(k3.attn_cos_min > k1.attn_cos_min);
}

TEST_CASE("policy overrides and sinks reach the right heads") {
  KvDump d = demo(256, false);
  Policy p = parse_policy(nlohmann::json::parse(R"({
      "method": "uniform", "k": {"bits": 4}, "v": {"bits": 4}, "sink_tokens": 4, "residual": 16,
      "overrides": [{"layers": [3], "heads": [1], "kind": "k", "bits": 8},
                    {"layers": [5], "kind": "kv", "fp16": true}]})"),
                          "test");
  auto plans = plan_heads(d, p);
  for (const auto& hp : plans) {
    bool l3h1k = hp.layer == 3 && hp.head == 1 && hp.kind == 'k';
    CHECK(hp.quant.bits == (l3h1k ? 8 : 4));
    CHECK(hp.quant.full_precision == (hp.layer == 5));
    CHECK(hp.fp_head == 4);
    CHECK(hp.fp_tail == 16);
  }
  Policy bad = p;
  bad.overrides[0].layers = {99};
  CHECK_THROWS_WITH(plan_heads(d, bad), Catch::Contains("$.overrides[0].layers: layer 99 is outside"));
}

TEST_CASE("quantize_dump can be cancelled") {
  KvDump d = demo(256, false);
  std::atomic<bool> stop{true};
  QuantizeOptions o = no_attention();
  o.cancel = &stop;
  CHECK_THROWS_AS(quantize_dump(d, load_preset("kivi-2"), o), Cancelled);
}
