// Policy scripts (python/policy_script.h): seed 002's AdaptiveQuantPolicy planning an ordinary
// policy on a dump; C++ checks every return value and the budget.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "core/policy/policy.h"
#include "core/quant/head_plan.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"
#include "core/util/error.h"
#include "python/policy_script.h"
#include "test_util.h"

using namespace kvscope;
using json = nlohmann::json;

namespace {

const std::string kPolicies = std::string(KVSCOPE_SOURCE_DIR) + "/tests/python/data/policies";

// 4 layers x 2 KV heads x 256 tokens, head_dim 64; planted outlier key heads (0,1) and (2,0).
KvDump small_dump() {
  SynthOptions o;
  o.layers = 4;
  o.kv_heads = 2;
  o.q_heads = 4;
  o.head_dim = 64;
  o.tokens = 256;
  o.seed = 7;
  o.planted = {{0, 1, 130.0f}, {2, 0, 60.0f}};
  return make_synthetic_dump(o);
}

ScriptTarget target_of(const KvDump& d) {
  ScriptTarget t;
  t.model_id = "synthetic";
  t.layers = d.shape.layers;
  t.kv_heads = d.shape.kv_heads;
  t.head_dim = d.shape.head_dim;
  t.tokens = d.shape.tokens;
  t.dump = &d;
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// seed_style.py's rule, computed here independently: max over channels of max_t |k| divided by the
// median channel's (the mean of the two middle ones, as numpy's median).
int expected_key_bits(const KvDump& d, int l, int h) {
  const int T = d.shape.tokens, D = d.shape.head_dim;
  std::vector<double> amax(D, 0.0);
  const float* k = d.k(l, h);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < D; ++c) amax[c] = std::max(amax[c], std::abs(static_cast<double>(k[t * D + c])));
  std::vector<double> s = amax;
  std::sort(s.begin(), s.end());
  const double median = (s[D / 2 - 1] + s[D / 2]) / 2;
  return s.back() / median > 8.0 ? 4 : 3;
}

std::string write(const TempDir& d, const std::string& name, const std::string& text) {
  std::ofstream(d.path(name)) << text;
  return d.path(name);
}

}  // namespace

TEST_CASE("policy script: seed-style script plans per-layer statistics bits, residuals and a 3-bit budget", "[script]") {
  const KvDump dump = small_dump();
  const std::string path = kPolicies + "/seed_style.py";
  check_policy_script(path);
  const Policy p = plan_policy_script(path, target_of(dump));
  CHECK(method_name(p.method) == "kivi");
  CHECK(p.residual_layers == std::vector<int>{128, 32, 32, 32});
  CHECK(p.budget.max_avg_bits == 3);

  // Every planned (layer, head, kind) has the bits the script chose, and they follow its rule.
  const std::vector<HeadPlan> plans = plan_heads(dump, p);
  std::set<int> key_bits;
  double sum = 0;
  for (const HeadPlan& hp : plans) {
    const int want = hp.kind == 'v' ? 2 : expected_key_bits(dump, hp.layer, hp.head);
    CAPTURE(hp.layer, hp.head, hp.kind);
    CHECK(hp.quant.bits == want);
    CHECK(hp.quant.axis == (hp.kind == 'k' ? Axis::Channel : Axis::Token));
    CHECK(hp.fp_tail == residual_tokens(p, hp.kind, 256, hp.layer));
    if (hp.kind == 'k') key_bits.insert(hp.quant.bits);
    sum += hp.quant.bits;
  }
  CHECK(key_bits == std::set<int>{3, 4});  // the statistics decide: both answers occur
  CHECK(sum / plans.size() <= 3.0);

  // The record: source, hash, decisions, bits per (layer, kind, head) equal to the plans.
  const json rec = json::parse(p.script_json);
  CHECK(rec.at("source").get<std::string>().find("class AdaptiveQuantPolicy") != std::string::npos);
  CHECK(rec.at("hash").get<std::string>().rfind("fnv1a64:", 0) == 0);
  for (const HeadPlan& hp : plans)
    CHECK(rec.at("bits").at(std::string(1, hp.kind)).at(hp.layer).at(hp.head).get<int>() == hp.quant.bits);
  int choose_bits_calls = 0;
  for (const auto& d : rec.at("decisions")) choose_bits_calls += d.at("hook") == "choose_bits";
  CHECK(choose_bits_calls == 4 * 2 * 2);  // once per (layer, kind, head group of 1 head)

  // The policy survives the run store's round trip (canonical JSON) with its record.
  const Policy back = parse_policy(json::parse(canonical_policy_json(p)), "stored");
  CHECK(back.script_json == p.script_json);
  CHECK(back.residual_layers == p.residual_layers);
}

TEST_CASE("policy script: a JSON policy making the same choices quantizes identically", "[script]") {
  const KvDump dump = small_dump();
  Policy script = plan_policy_script(kPolicies + "/fixed.py", target_of(dump));
  Policy plain = load_policy_file(kPolicies + "/fixed.json");
  QuantizeOptions o;
  o.attention = true;
  o.attn_queries = 32;
  const QuantizeReport a = quantize_dump(dump, script, o), b = quantize_dump(dump, plain, o);
  REQUIRE(a.per_head.size() == b.per_head.size());
  for (size_t i = 0; i < a.per_head.size(); ++i) {
    CAPTURE(i);
    CHECK(a.per_head[i].bits == b.per_head[i].bits);
    CHECK(a.per_head[i].nmse == b.per_head[i].nmse);  // bit-identical reconstruction
  }
  CHECK(a.attn_kl_mean == b.attn_kl_mean);
  CHECK(a.per_head[0].bits > a.per_head[4].bits);  // layer 0 K at 4 bits, layer 1 K at 2
}

TEST_CASE("policy script: every hook error is one line naming the script, hook, arguments and value", "[script]") {
  const KvDump dump = small_dump();
  TempDir d;
  auto plan = [&](const std::string& file) { plan_policy_script(file, target_of(dump)); };
  auto one_line = [](const std::string& e) { return e.find('\n') == std::string::npos; };

  const std::string raises = write(d, "raises.py",
      "class AdaptiveQuantPolicy:\n"
      "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
      "        if layer_id == 2:\n"
      "            raise ValueError('no bits for layer 2')\n"
      "        return 2\n");
  std::string e = error_of([&] { plan(raises); });
  CHECK(e == raises + ":4: ValueError: no bits for layer 2 (in choose_bits(layer_id=2, kv_kind='k', head_group=0, "
                      "token_stats, budget_state={bits_spent: 16, entries_done: 8}))");

  const std::string wrong = write(d, "wrong.py",
      "class AdaptiveQuantPolicy:\n"
      "    def choose_axis(self, layer_id, kv_kind):\n"
      "        return 'channel' if kv_kind == 'k' else 3\n");
  CHECK(error_of([&] { plan(wrong); }) ==
        wrong + ": choose_axis(layer_id=0, kv_kind='v') returned 3: must be a str, one of 'token', 'channel', 'head'");

  const std::string boolean = write(d, "bool.py",
      "class AdaptiveQuantPolicy:\n"
      "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
      "        return True\n");
  CHECK_THAT(error_of([&] { plan(boolean); }), Catch::Matchers::EndsWith("returned True: must be an int"));

  const std::string greedy = write(d, "greedy.py",
      "BUDGET = {'max_avg_bits': 3, 'bit_range': [2, 8]}\n"
      "class AdaptiveQuantPolicy:\n"
      "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
      "        return 8\n");
  e = error_of([&] { plan(greedy); });
  CHECK_THAT(e, Catch::Matchers::StartsWith(greedy + ": choose_bits(layer_id=0, kv_kind='v', head_group=0") &&
                    Catch::Matchers::Contains("returned 8: overspends the budget of 3 bits per KV entry"));
  CHECK(one_line(e));

  const std::string range = write(d, "range.py",
      "class AdaptiveQuantPolicy:\n"
      "    def bit_range(self, layer_id, kv_kind, request_meta, budget_state):\n"
      "        return (2, 4)\n"
      "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
      "        return 5\n");
  CHECK_THAT(error_of([&] { plan(range); }), Catch::Matchers::Contains("returned 5: outside the bit range [2, 4]"));

  const std::string no_class = write(d, "noclass.py", "class Policy:\n    pass\n");
  CHECK(error_of([&] { check_policy_script(no_class); }) == no_class + ": defines no class AdaptiveQuantPolicy");

  const std::string syntax = write(d, "syntax.py", "class AdaptiveQuantPolicy:\n    def choose_bits(self:\n        return 2\n");
  e = error_of([&] { check_policy_script(syntax); });
  CHECK_THAT(e, Catch::Matchers::StartsWith(syntax + ":2: SyntaxError:"));
  CHECK(one_line(e));

  const std::string family = write(d, "family.py",
      "class AdaptiveQuantPolicy:\n"
      "    def quantizer_family(self, layer_id, kv_kind, request_meta):\n"
      "        return 'kivi' if layer_id < 2 else 'uniform'\n");
  CHECK_THAT(error_of([&] { plan(family); }),
             Catch::Matchers::Contains("quantizer_family(layer_id=2, kv_kind='k', request_meta) returned \"uniform\" but "
                                       "quantizer_family(layer_id=0, kv_kind='k', request_meta) returned \"kivi\""));
}

TEST_CASE("policy script: every per-(layer, kind) hook lands in the planned policy", "[script]") {
  const KvDump dump = small_dump();
  TempDir d;
  const std::string all = write(d, "all_hooks.py",
      "BASE = 'uniform-4'\n"
      "class AdaptiveQuantPolicy:\n"
      "    def group_size(self, layer_id, kv_kind, request_meta):\n"
      "        return 64 if kv_kind == 'k' else 16\n"
      "    def clip_ratio(self, layer_id, kv_kind, request_meta):\n"
      "        return 0.5 + 0.1 * layer_id\n"
      "    def symmetric(self, layer_id, kv_kind, request_meta):\n"
      "        return kv_kind == 'v'\n"
      "    def sink_tokens(self, layer_id, kv_kind, request_meta):\n"
      "        return 4\n"
      "    def outliers_ratio(self, layer_id, kv_kind, request_meta):\n"
      "        return 0.02 if kv_kind == 'k' else 0.0\n"
      "    def use_attentions(self, layer_id, kv_kind, request_meta):\n"
      "        return False\n"
      "    def last_n_attentions(self, layer_id, kv_kind, request_meta):\n"
      "        return 7\n"
      "    def target_quantization_error(self, layer_id, kv_kind, request_meta):\n"
      "        return 1e-3 if kv_kind == 'k' else 0.1\n"
      "    def q_norm(self, layer_id, kv_kind, request_meta):\n"
      "        return 2.5\n");
  const Policy p = plan_policy_script(all, target_of(dump));
  CHECK(p.sink_tokens == 4);
  CHECK(p.outliers_ratio_k == 0.02);
  CHECK(p.outliers_ratio_v == 0.0);
  CHECK_FALSE(p.attention.use_attentions);
  CHECK(p.attention.last_n_attentions == 7);
  CHECK(p.attention.target_k == 1e-3);
  CHECK(p.attention.target_v == 0.1);
  CHECK(p.attention.q_norm == 2.5);
  // One rule per (layer, kind) with that call's group size, clip ratio and symmetry; bits from the base.
  REQUIRE(p.overrides.size() == 8);
  for (const PolicyOverride& o : p.overrides) {
    REQUIRE(o.layers.size() == 1);
    REQUIRE(o.k != o.v);
    const int l = o.layers[0];
    CAPTURE(l, o.k);
    const TensorQuant q = apply_override(o.k ? p.k : p.v, o);
    CHECK(q.group_size == (o.k ? 64 : 16));
    CHECK(q.clip_ratio == Approx(0.5 + 0.1 * l).epsilon(1e-12));
    CHECK(q.symmetric == o.v);
    CHECK(q.bits == 4);
  }
  const json record = json::parse(p.script_json);
  CHECK(record["decisions"].size() == 4 * 2 * 9);
  CHECK(record["base"] == "uniform-4");

  const std::string mixed = write(d, "mixed_target.py",
      "class AdaptiveQuantPolicy:\n"
      "    def target_quantization_error(self, layer_id, kv_kind, request_meta):\n"
      "        return 0.1 if layer_id == 0 else 0.2\n");
  CHECK_THAT(error_of([&] { plan_policy_script(mixed, target_of(dump)); }),
             Catch::Matchers::EndsWith("kvscope keeps one target_quantization_error per policy and kind"));
}
