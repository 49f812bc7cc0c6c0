// Incremental live re-quantization (app/gui/live_quant.h) driven through the workspace, without a
// window: which slices a policy change re-quantizes, which (layer, KV head) pairs it re-measures,
// which rows are stale meanwhile, and that the report equals a from-scratch whole-dump
// quantize_dump of the same policy, bit for bit.
#include <catch2/catch.hpp>

#include "app/gui/live_quant.h"
#include "app/gui/workspace.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"
#include "test_util.h"
#include "tests/app/workspace_ticks.h"

using namespace kvscope;
using namespace kvscope::gui;

namespace {

using kvscope::gui::test::settle;
using kvscope::gui::test::tick_until;

SynthOptions small_synth() {
  SynthOptions so;
  so.layers = 3;
  so.kv_heads = 2;
  so.q_heads = 4;
  so.head_dim = 32;
  so.tokens = 384;  // longer than kivi's 128-token fp16 window
  so.planted = {{1, 0, 50.0f}};
  return so;
}

// Exact equality of everything quantize_dump reports except the timing fields.
void check_identical(const QuantizeReport& a, const QuantizeReport& b) {
  CHECK(a.policy_json == b.policy_json);
  CHECK(a.method == b.method);
  CHECK(a.bits_per_element == b.bits_per_element);
  CHECK(a.k_bits_per_element == b.k_bits_per_element);
  CHECK(a.v_bits_per_element == b.v_bits_per_element);
  CHECK(a.bytes_per_token == b.bytes_per_token);
  CHECK(a.static_bytes == b.static_bytes);
  CHECK(a.k_nmse == b.k_nmse);
  CHECK(a.v_nmse == b.v_nmse);
  CHECK(a.k_cos == b.k_cos);
  CHECK(a.v_cos == b.v_cos);
  CHECK(a.attn_queries == b.attn_queries);
  CHECK(a.attn_cos_mean == b.attn_cos_mean);
  CHECK(a.attn_cos_min == b.attn_cos_min);
  CHECK(a.attn_nmse == b.attn_nmse);
  CHECK(a.attn_kl_mean == b.attn_kl_mean);
  REQUIRE(a.per_head.size() == b.per_head.size());
  for (size_t i = 0; i < a.per_head.size(); ++i) {
    const HeadMetrics &x = a.per_head[i], &y = b.per_head[i];
    INFO("slice " << i);
    CHECK(x.layer == y.layer);
    CHECK(x.head == y.head);
    CHECK(x.kind == y.kind);
    CHECK(x.nmse == y.nmse);
    CHECK(x.cos == y.cos);
    CHECK(x.mse == y.mse);
    CHECK(x.max_abs == y.max_abs);
    CHECK(x.bits == y.bits);
    CHECK(x.elements == y.elements);
    CHECK(x.full_precision == y.full_precision);
  }
  REQUIRE(a.attention.size() == b.attention.size());
  for (size_t i = 0; i < a.attention.size(); ++i) {
    const AttentionMetrics &x = a.attention[i], &y = b.attention[i];
    INFO("pair " << i);
    CHECK(x.layer == y.layer);
    CHECK(x.head == y.head);
    CHECK(x.out_cos_mean == y.out_cos_mean);
    CHECK(x.out_cos_min == y.out_cos_min);
    CHECK(x.out_nmse == y.out_nmse);
    CHECK(x.kl_mean == y.kl_mean);
    CHECK(x.prob_cos_mean == y.prob_cos_mean);
    CHECK(x.logit_rmse == y.logit_rmse);
    CHECK(x.logit_max_abs == y.logit_max_abs);
  }
}

// The from-scratch answer: the whole dump in f32, quantize_dump at the workspace's query positions.
void check_against_whole_dump(const Workspace& ws, const KvDump& whole) {
  REQUIRE(ws.report());
  REQUIRE(ws.attention_positions() > 0);
  QuantizeOptions qo;
  qo.attn_queries = ws.attention_positions();
  const Policy p = parse_policy(policy_to_json(ws.policy()), "test");
  check_identical(*ws.report(), quantize_dump(whole, p, qo));
}

std::vector<size_t> all_of_kind(const DumpShape& s, char kind) {
  std::vector<size_t> v;
  for (size_t i = kind == 'v'; i < static_cast<size_t>(s.layers) * s.kv_heads * 2; i += 2) v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("live quant: a policy change re-quantizes only the slices it changes, same numbers as the whole dump") {
  TempDir tmp;
  const std::string path = tmp.path("small.safetensors");
  const SynthOptions so = small_synth();
  write_synthetic_dump(path, so);
  const KvDump whole = load_dump(path);
  const DumpShape& s = whole.shape;
  const size_t slices = static_cast<size_t>(s.layers) * s.kv_heads * 2, pairs = slices / 2;

  Workspace ws;
  ws.open_dump(path);
  settle(ws);
  REQUIRE(ws.errors().empty());
  REQUIRE(ws.dump()->file_backed());  // mapped, not loaded
  CHECK(ws.last_requantized().size() == slices);  // first pass: everything
  CHECK(ws.last_remeasured().size() == pairs);
  CHECK(ws.report_gen() == ws.policy_gen());
  check_against_whole_dump(ws, whole);

  SECTION("V bits leave K alone") {
    ws.set_field("v.bits", "4", "test");
    ws.tick();  // starts the pass; nothing of it applied yet
    CHECK(ws.last_requantized() == all_of_kind(s, 'v'));
    CHECK(ws.last_remeasured().size() == pairs);  // every pair has new V
    CHECK(ws.stale_rows('v') == std::vector<bool>(s.layers, true));
    CHECK(ws.stale_rows('k') == std::vector<bool>(s.layers, false));
    settle(ws);
    CHECK(ws.stale_rows('v') == std::vector<bool>(s.layers, false));
    CHECK(ws.stale_rows('a') == std::vector<bool>(s.layers, false));
    check_against_whole_dump(ws, whole);
  }
  SECTION("a one-head fp16 override touches one slice and one attention pair") {
    ws.toggle_head_fp16(1, 1, 'k');
    ws.tick();
    CHECK(ws.last_requantized() == std::vector<size_t>{(1 * 2 + 1) * 2});
    CHECK(ws.last_remeasured() == std::vector<size_t>{1 * 2 + 1});
    CHECK(ws.stale_rows('k') == std::vector<bool>{false, true, false});
    CHECK(ws.stale_rows('v') == std::vector<bool>(s.layers, false));
    settle(ws);
    check_against_whole_dump(ws, whole);
    // Undo: the slice goes back to its first key, re-quantized once more; the rest stays.
    ws.toggle_head_fp16(1, 1, 'k');
    settle(ws);
    CHECK(ws.last_requantized() == std::vector<size_t>{(1 * 2 + 1) * 2});
    check_against_whole_dump(ws, whole);
  }
  SECTION("a policy needing the whole dump takes the whole-dump path, then back") {
    ws.load_preset("kvmix-3");  // ranked outlier heads: statistics over every head
    settle(ws);
    REQUIRE(ws.errors().empty());
    CHECK(ws.last_requantized().empty());
    REQUIRE(ws.report());
    CHECK(ws.report()->policy_name == "kvmix-3");
    CHECK(ws.report()->attn_queries > 0);
    ws.load_preset("kivi-2");
    settle(ws);
    CHECK(ws.last_requantized().size() == slices);
    check_against_whole_dump(ws, whole);
  }
}

TEST_CASE("live quant: the pass delivers one update per layer, tensor metrics before attention") {
  const KvDump dump = make_synthetic_dump(small_synth());
  auto src = DumpSource::in_memory(std::make_shared<const KvDump>(dump));
  LivePass pass;
  pass.policy = load_preset("kivi-2");
  pass.keys = slice_keys(src->header(), pass.policy, &pass.plans);
  REQUIRE(pass.keys.size() == 12);
  pass.slices = {1, 3, 9};        // V of layer 0 (both heads) and V of layer 2 head 0
  pass.attention = {0, 1, 4};     // layer 0 both heads, layer 2 head 0
  pass.positions = sample_positions(dump.shape.tokens, 16);
  UpdateInbox inbox;
  std::atomic<bool> cancel{false};
  run_live_pass(*src, pass, cancel, inbox, {});
  std::vector<LayerUpdate> ups = inbox.take();
  REQUIRE(ups.size() == 4);
  CHECK(ups[0].layer == 0);
  CHECK(ups[0].slices.size() == 2);
  CHECK(ups[1].layer == 2);
  CHECK(ups[1].slices.size() == 1);
  CHECK(ups[1].slices[0].first == 9);
  CHECK(ups[2].layer == 0);
  CHECK(ups[2].attention.size() == 2);
  CHECK(ups[3].layer == 2);
  REQUIRE(ups[3].attention.size() == 1);
  CHECK(ups[3].attention[0].second.positions == 16);
  CHECK(ups[3].attention[0].second.key == pass.keys[8] + "&" + pass.keys[9]);
  // A cancelled pass stops before its first layer.
  cancel = true;
  CHECK_THROWS_AS(run_live_pass(*src, pass, cancel, inbox, {}), Cancelled);
  CHECK(inbox.take().empty());
}

TEST_CASE("live quant: query positions follow the time budget") {
  const KvDump dump = make_synthetic_dump(small_synth());
  auto src = DumpSource::in_memory(std::make_shared<const KvDump>(dump));
  LivePass pass;
  pass.policy = load_preset("kivi-2");
  pass.keys = slice_keys(src->header(), pass.policy, &pass.plans);
  CHECK(choose_query_positions(*src, pass, 1e-9) == kMinPositions);               // no time: the floor
  CHECK(choose_query_positions(*src, pass, 1e6) == std::min(dump.shape.tokens, kMaxPositions));  // all the time: the cap
}

TEST_CASE("live quant: keys are the effective settings of each slice") {
  KvDump header;
  header.shape = {2, 2, 4, 32, 256};
  Policy p = load_preset("kivi-2");
  const auto a = slice_keys(header, p);
  p.v.bits = 4;
  const auto b = slice_keys(header, p);
  REQUIRE(a.size() == 8);
  for (size_t i = 0; i < a.size(); ++i) CHECK((a[i] == b[i]) == (i % 2 == 0));  // K keys equal, V keys differ
  CHECK(slice_keys(header, load_preset("kvmix-3")).empty());                   // ranked rule: not per slice
}

TEST_CASE("live quant: F32 and BF16 files and in-memory dumps give the whole-dump numbers") {
  for (DType dtype : {DType::F32, DType::BF16}) {
    INFO(dtype_name(dtype));
    TempDir tmp;
    const std::string path = tmp.path("d.safetensors");
    write_synthetic_dump(path, small_synth(), dtype);
    const KvDump whole = load_dump(path);
    Workspace ws;
    ws.open_dump(path);
    settle(ws);
    REQUIRE(ws.errors().empty());
    CHECK(ws.dump()->file_backed());
    check_against_whole_dump(ws, whole);
    Workspace mem;  // the demo's and captures' path before this session: a KvDump in memory
    mem.set_dump(std::make_shared<const KvDump>(whole), "in memory");
    settle(mem);
    CHECK(!mem.dump()->file_backed());
    check_against_whole_dump(mem, whole);
  }
}
