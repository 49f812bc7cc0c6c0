// The cache's per-block hook point (core/replay/block_hook.h) against independent references: block
// boundaries worked out by hand, a hook returning the plan's bits leaves the cache bit-identical to
// no hook, fp16 blocks (16) are exact and counted at 16 bits, the statistics rows are the cached
// fp16 values, and recorded choices replay to the same cache.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <random>

#include "core/replay/block_hook.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"
#include "tests/core/replay/cache_fixtures.h"

using namespace kvscope;
using kvscope::test::append_range;
using kvscope::test::policy_from;
using kvscope::test::tiny_config;

namespace {

constexpr int kH = 2, kD = 8, kLayers = 1;

ModelConfig config() { return tiny_config(kLayers, kH, kD); }

struct FnHook : BlockBitsHook {
  std::function<int(const KvBlock&)> fn;
  std::vector<KvBlock> seen;
  int caches = 0;
  int choose_bits(const KvBlock& b) override {
    seen.push_back(b);
    return fn(b);
  }
  void begin_cache() override { ++caches; }
};

// Prefill of `prompt` tokens, then `decode` single tokens, every head's values N(0, 2) rounded to fp16.
std::vector<float> feed(QuantizedKvCache& cache, int prompt, int decode, unsigned seed = 3) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  const int T = prompt + decode;
  std::vector<float> x(static_cast<size_t>(2) * kH * T * kD);  // [kind][head][t][d]
  for (auto& e : x) e = round_to_f16(nd(rng));
  const auto mid = x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2);
  const std::vector<float> k(x.begin(), mid), v(mid, x.end());
  auto append = [&](int first, int n) { append_range(cache, config(), k, v, T, first, n); };
  append(0, prompt);
  cache.flush();
  for (int i = 0; i < decode; ++i) {
    append(prompt + i, 1);
    cache.flush();
  }
  return x;
}

std::vector<float> mirror(const QuantizedKvCache& c, int T) {
  const KvLayerView v = c.view(0);
  std::vector<float> out;
  for (const float* base : {v.k, v.v})
    for (int h = 0; h < kH; ++h) out.insert(out.end(), base + h * v.head_stride, base + h * v.head_stride + static_cast<int64_t>(T) * kD);
  return out;
}

// uniform per-token values and KIVI-style per-channel keys: residual 4, sinks 1, groups of 4.
const char* kPolicy = R"({"name": "t", "method": "kivi", "k": {"bits": 2, "axis": "channel", "group_size": 4},
                          "v": {"bits": 2, "axis": "token", "group_size": 4}, "residual": 4, "sink_tokens": 1})";

}  // namespace

TEST_CASE("block hook: blocks are R tokens after the sinks, asked once per (layer, kind, head group, block)", "[block_hook]") {
  const Policy p = policy_from(kPolicy);
  QuantizedKvCache cache(config(), p);
  FnHook hook;
  hook.fn = [](const KvBlock& b) { return b.planned_bits; };
  cache.set_block_hook(&hook);
  CHECK(hook.caches == 1);
  feed(cache, 11, 6);  // 17 tokens, token 0 the sink
  // By hand: V (per-token, window R = 4) has quantized tokens 1..12: blocks of R, [1,5) [5,9) [9,13).
  // K (KIVI: the fp16 buffer of R tokens is flushed whole, (T - S) mod R = 0 left): [1,5) [5,9) [9,13) [13,17).
  std::map<std::pair<char, int>, std::vector<std::pair<int, int>>> got;  // (kind, head) -> (first, tokens)
  for (const BlockChoice& c : cache.block_choices()) got[{c.kind, c.head_group}].push_back({c.first, c.tokens});
  const std::vector<std::pair<int, int>> v_blocks = {{1, 4}, {5, 4}, {9, 4}};
  for (int h = 0; h < kH; ++h) {
    CAPTURE(h);
    CHECK(got[{'v', h}] == v_blocks);
    REQUIRE(got[{'k', h}].size() == 4);
    for (int t = 0; t < 4; ++t) CHECK(got[{'k', h}][t] == std::make_pair(1 + 4 * t, 4));
    CHECK(cache.residual_fp16_tokens(0, h, 'v') == 4);
  }
  CHECK(cache.block_choices().size() == hook.seen.size());  // never asked twice for one block

  // The hook's rows are the cached fp16 values of the block's tokens (V, head 0, block [5, 9)).
  QuantizedKvCache again(config(), p);
  FnHook probe;
  std::vector<float> rows;
  probe.fn = [&](const KvBlock& b) {
    if (b.kind == 'v' && b.head_group == 1 && b.index == 1)
      for (int t = 0; t < b.tokens; ++t) rows.insert(rows.end(), b.rows + t * b.head_dim, b.rows + (t + 1) * b.head_dim);
    return b.planned_bits;
  };
  again.set_block_hook(&probe);
  const std::vector<float> x = feed(again, 11, 6);
  const int T = 17;
  const std::vector<float> want(x.begin() + ((1 * kH + 1) * T + 5) * kD, x.begin() + ((1 * kH + 1) * T + 9) * kD);
  CHECK(rows == want);
}

TEST_CASE("block hook: the plan's bits reproduce the plan; 16 keeps blocks exact; recorded choices replay", "[block_hook]") {
  const Policy p = policy_from(kPolicy);
  const int T = 11 + 6;
  QuantizedKvCache plain(config(), p);
  feed(plain, 11, 6);

  QuantizedKvCache same(config(), p);
  FnHook planned;
  planned.fn = [](const KvBlock& b) { return b.planned_bits; };
  same.set_block_hook(&planned);
  feed(same, 11, 6);
  CHECK(mirror(same, T) == mirror(plain, T));
  CHECK(same.stored_bits() == plain.stored_bits());
  CHECK(same.squared_error() == plain.squared_error());

  // All fp16: no error, every token counted at 16 bits, as the fp16 reference.
  QuantizedKvCache fp(config(), p);
  FnHook keep;
  keep.fn = [](const KvBlock&) { return 16; };
  fp.set_block_hook(&keep);
  const std::vector<float> x = feed(fp, 11, 6);
  CHECK(fp.squared_error() == 0);
  CHECK(fp.stored_bits() == static_cast<uint64_t>(T) * 2 * kH * kD * 16);
  CHECK(mirror(fp, T) == x);

  // Mixed bits, then the recorded choices through RecordedBlockBits (and their JSON): the same cache.
  QuantizedKvCache mixed(config(), p);
  FnHook alt;
  alt.fn = [](const KvBlock& b) { return b.index % 3 == 0 ? 4 : b.index % 3 == 1 ? 16 : 3; };
  mixed.set_block_hook(&alt);
  feed(mixed, 11, 6);
  const std::vector<BlockChoice> rec = parse_block_choices(block_choices_json(mixed.block_choices()), "test");
  CHECK(rec == mixed.block_choices());
  RecordedBlockBits replayed(rec);
  QuantizedKvCache back(config(), p);
  back.set_block_hook(&replayed);
  feed(back, 11, 6);
  CHECK(mirror(back, T) == mirror(mixed, T));
  CHECK(back.stored_bits() == mixed.stored_bits());
  CHECK(mirror(mixed, T) != mirror(plain, T));
}

TEST_CASE("block hook: bad bits and axis head are one error each", "[block_hook]") {
  const Policy p = policy_from(kPolicy);
  QuantizedKvCache cache(config(), p);
  FnHook bad;
  bad.fn = [](const KvBlock&) { return 9; };
  cache.set_block_hook(&bad);
  CHECK_THROWS_WITH(feed(cache, 11, 0),
                    "replay: policy t: block 0 of layer 0 K head group 0: 9 bits: bits must be 1..8 or 16 (fp16)");
  const Policy head = policy_from(R"({"name": "h", "method": "uniform", "k": {"bits": 4, "axis": "head"},
                                      "v": {"bits": 4, "axis": "head"}, "residual": 4})");
  QuantizedKvCache hc(config(), head);
  FnHook any;
  any.fn = [](const KvBlock& b) { return b.planned_bits; };
  hc.set_block_hook(&any);
  CHECK_THROWS_WITH(feed(hc, 11, 0), Catch::Matchers::Contains("per-block bits (choose_bits) need a per-token or per-channel axis"));
}
