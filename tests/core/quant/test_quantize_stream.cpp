// quantize_dump_streamed (layer by layer from the mapped file) against quantize_dump on the
// loaded dump: the same report, bit for bit, for every plain preset and stored dtype.
#include <catch2/catch.hpp>

#include "core/dump/dump_reader.h"
#include "core/quant/quantize_stream.h"
#include "core/synth/synth.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

namespace {

void require_same(const QuantizeReport& a, const QuantizeReport& b) {
  REQUIRE(a.per_head.size() == b.per_head.size());
  for (size_t i = 0; i < a.per_head.size(); ++i) {
    const HeadMetrics &x = a.per_head[i], &y = b.per_head[i];
    INFO("head item " << i);
    REQUIRE((x.layer == y.layer && x.head == y.head && x.kind == y.kind));
    REQUIRE(x.nmse == y.nmse);
    REQUIRE(x.cos == y.cos);
    REQUIRE(x.mse == y.mse);
    REQUIRE(x.max_abs == y.max_abs);
    REQUIRE(x.bits == y.bits);
    REQUIRE(x.elements == y.elements);
    REQUIRE(x.full_precision == y.full_precision);
  }
  REQUIRE(a.attention.size() == b.attention.size());
  for (size_t i = 0; i < a.attention.size(); ++i) {
    const AttentionMetrics &x = a.attention[i], &y = b.attention[i];
    REQUIRE((x.out_cos_mean == y.out_cos_mean && x.out_cos_min == y.out_cos_min && x.out_nmse == y.out_nmse &&
             x.kl_mean == y.kl_mean && x.prob_cos_mean == y.prob_cos_mean && x.logit_rmse == y.logit_rmse &&
             x.logit_max_abs == y.logit_max_abs));
  }
  REQUIRE(a.method == b.method);
  REQUIRE(a.policy_json == b.policy_json);
  REQUIRE(a.bits_per_element == b.bits_per_element);
  REQUIRE(a.bytes_per_token == b.bytes_per_token);
  REQUIRE(a.static_bytes == b.static_bytes);
  REQUIRE(a.fp16_bytes_per_token == b.fp16_bytes_per_token);
  REQUIRE((a.k_nmse == b.k_nmse && a.v_nmse == b.v_nmse && a.k_cos == b.k_cos && a.v_cos == b.v_cos));
  REQUIRE((a.attn_cos_mean == b.attn_cos_mean && a.attn_cos_min == b.attn_cos_min && a.attn_nmse == b.attn_nmse &&
           a.attn_kl_mean == b.attn_kl_mean && a.attn_queries == b.attn_queries));
}

}  // namespace

TEST_CASE("streamed quantize equals quantize_dump bit for bit", "[quantize_stream]") {
  TempDir tmp;
  SynthOptions o;
  o.layers = 3;
  o.kv_heads = 2;
  o.q_heads = 6;
  o.head_dim = 64;
  o.tokens = 300;  // KIVI: 300 % 128 = 44 fp16 key rows, 128 fp16 value rows
  o.planted = {{1, 0, 80.0f}};
  const KvDump d = make_synthetic_dump(o);
  Policy listed = load_preset("kvmix-2");
  listed.outliers.rule = OutlierSelect::Rule::List;
  listed.outliers.heads = {{1, 0}};
  listed.sink_tokens = 4;
  for (DType dt : {DType::F16, DType::BF16}) {
    const std::string path = tmp.path("d.safetensors");
    save_dump(path, d, dt);
    const KvDump whole = load_dump(path, {.require_q = true, .load_q = true, .load_pre_rope = false});
    DumpReader reader(path, {.require_q = true, .load_q = true, .load_pre_rope = false});
    std::vector<Policy> policies;
    for (const char* p : {"fp16", "uniform-4", "uniform-2", "kivi-2", "kivi-4", "kvmix-1", "kvmix-2", "kvmix-3", "kvsmooth-4"})
      policies.push_back(load_preset(p));  // kvmix-3 ranks outlier heads over the whole dump (a first pass)
    policies.push_back(listed);
    for (const Policy& p : policies) {
      INFO("dtype " << dtype_name(dt) << " policy " << p.name);
      REQUIRE(quantizes_streamed(p));
      QuantizeOptions opts;
      opts.attn_queries = 40;
      require_same(quantize_dump_streamed(reader, p, opts), quantize_dump(whole, p, opts));
      opts.attention = false;
      require_same(quantize_dump_streamed(reader, p, opts), quantize_dump(whole, p, opts));
    }
  }
  CHECK(!quantizes_streamed(load_preset("skvq-2")));  // groups span a layer's heads
  DumpReader reader(tmp.path("d.safetensors"));
  CHECK_THROWS_WITH(quantize_dump_streamed(reader, load_preset("skvq-2")), Catch::Contains("whole dump"));
  std::atomic<bool> stop{true};
  QuantizeOptions cancel;
  cancel.cancel = &stop;
  CHECK_THROWS_AS(quantize_dump_streamed(reader, load_preset("kivi-2"), cancel), Cancelled);
}

TEST_CASE("streamed quantize of a dump with q_positions measures attention there, as quantize_dump", "[quantize_stream]") {
  TempDir tmp;
  SynthOptions o;
  o.layers = 2;
  o.kv_heads = 2;
  o.q_heads = 4;
  o.head_dim = 32;
  o.tokens = 200;
  KvDump d = make_synthetic_dump(o);
  d.meta.q_positions = {3, 50, 51, 120, 199};
  const std::string path = tmp.path("qpos.safetensors");
  save_dump(path, d, DType::F16);
  const DumpLoadOptions lo{.require_q = true, .load_q = true, .load_pre_rope = false};
  const KvDump whole = load_dump(path, lo);
  DumpReader reader(path, lo);
  for (const char* p : {"kivi-2", "uniform-4"}) {
    INFO(p);
    const QuantizeReport streamed = quantize_dump_streamed(reader, load_preset(p), {});
    REQUIRE(streamed.attn_queries == 5);
    require_same(streamed, quantize_dump(whole, load_preset(p), {}));
  }
}
