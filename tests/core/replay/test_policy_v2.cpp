// Policies v2 for replay: head-group rules, calibration (outlier ranking, KVSmooth folded into the
// cache) and QAQ-style attention-guided bits, against hand-worked expectations.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>

#include "core/quant/quantized_tensor.h"
#include "core/replay/calibration.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/replay/replay.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"
#include "tests/tolerances.h"

using namespace kvscope;

namespace {

Policy parse(const std::string& text) { return parse_policy(nlohmann::json::parse(text), "p.json"); }

ModelConfig config(int layers, int kv_heads, int head_dim, int q_heads = 0) {
  ModelConfig c;
  c.num_layers = layers;
  c.num_kv_heads = kv_heads;
  c.num_heads = q_heads > 0 ? q_heads : kv_heads;
  c.head_dim = head_dim;
  c.hidden_size = c.num_heads * head_dim;
  c.max_position_embeddings = 4096;
  return c;
}

// A calibration with every K, V and Q value zero; tests fill in what they need.
Calibration zero_calibration(const ModelConfig& c, int T) {
  Calibration cal;
  cal.tokens = T;
  cal.layers = c.num_layers;
  cal.kv_heads = c.num_kv_heads;
  cal.q_heads = c.num_heads;
  cal.head_dim = c.head_dim;
  const size_t kv = static_cast<size_t>(c.num_kv_heads) * T * c.head_dim, q = static_cast<size_t>(c.num_heads) * T * c.head_dim;
  cal.k.assign(c.num_layers, std::vector<float>(kv, 0.0f));
  cal.v.assign(c.num_layers, std::vector<float>(kv, 0.0f));
  cal.q.assign(c.num_layers, std::vector<float>(q, 0.0f));
  return cal;
}

float& at(std::vector<float>& x, int T, int D, int h, int t, int d) { return x[(static_cast<size_t>(h) * T + t) * D + d]; }

const HeadQuantPlan& plan_of(const std::vector<HeadQuantPlan>& plans, int H, int l, int h, char kind) {
  return plans[(static_cast<size_t>(l) * H + h) * 2 + (kind == 'v' ? 1 : 0)];
}

}  // namespace

TEST_CASE("policies v2 fields parse, round-trip and name the JSON path of each error") {
  const Policy p = parse(R"({"method":"kivi","head_group_size":2,
      "rules":[{"layer_range":[1,2],"head_groups":[1],"kind":"k","bits":4}],
      "calibration":{"mode":"online","tokens":128},
      "attention":{"use_attentions":true,"last_n_attentions":3,"target_quantization_error":0.5,"q_norm":"measured"},
      "budget":{"max_avg_bits":3,"bit_range":[2,4]}})");
  CHECK(p.head_group_size == 2);
  REQUIRE(p.rules.size() == 1);
  CHECK(p.rules[0].layer_lo == 1);
  CHECK(p.rules[0].layer_hi == 2);
  CHECK(p.rules[0].head_groups == std::vector<int>{1});
  CHECK(p.calibration.mode == CalibrationSpec::Mode::Online);
  CHECK(p.calibration.tokens == 128);
  CHECK(p.attention.use_attentions);
  CHECK(p.attention.last_n_attentions == 3);
  CHECK(p.attention.q_norm == 0);
  const Policy back = parse_policy(policy_to_json(p), "round-trip");
  CHECK(canonical_policy_json(back) == canonical_policy_json(p));
  CHECK(back.rules[0].layer_hi == 2);
  CHECK(back.attention.target_k == 0.5);
  CHECK(back.attention.target_v == 0.5);
  const Policy per_kind = parse(R"({"method":"uniform","calibration":{"mode":"online"},
      "attention":{"use_attentions":true,"target_quantization_error":{"k":1e-4,"v":0.02}}})");
  CHECK(per_kind.attention.target_k == 1e-4);
  CHECK(per_kind.attention.target_v == 0.02);
  CHECK(canonical_policy_json(parse_policy(policy_to_json(per_kind), "rt")) == canonical_policy_json(per_kind));

  const Policy text = parse(R"({"method":"uniform","k":{"axis":"head"},"calibration":{"mode":"text","text":"c.txt","tokens":64},
      "outlier_heads":{"rule":"count","count":2},"smooth":{"factor":0.5},"attention":{"use_attentions":false}})");
  const Policy text_back = parse_policy(policy_to_json(text), "round-trip");
  CHECK(canonical_policy_json(text_back) == canonical_policy_json(text));
  CHECK(text_back.calibration.text == "c.txt");
  CHECK(needs_calibration(text_back));
  CHECK_FALSE(needs_calibration(parse(R"({"method":"kivi"})")));

  auto err = [](const std::string& s) {
    try {
      parse(s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err(R"({"method":"uniform","calibration":{"mode":"text"}})") ==
        "p.json: $.calibration.text: is required with mode \"text\" (a text file)");
  CHECK(err(R"({"method":"uniform","calibration":{"mode":"online","text":"x"}})") ==
        "p.json: $.calibration.text: only applies to mode \"text\"");
  CHECK(err(R"({"method":"uniform","calibration":{"mode":"offline"}})") ==
        "p.json: $.calibration.mode: must be \"none\", \"text\" or \"online\"");
  CHECK(err(R"({"method":"uniform","calibration":{"mode":"online","tokens":1}})") ==
        "p.json: $.calibration.tokens: must be an integer in 2..1048576");
  CHECK(err(R"({"method":"uniform","attention":{"use_attentions":true,"target_quantization_error":0.1}})") ==
        "p.json: $.attention.use_attentions: needs $.calibration.mode \"text\" or \"online\" (the attention is measured there)");
  CHECK(err(R"({"method":"uniform","calibration":{"mode":"online"},"attention":{"use_attentions":true}})") ==
        "p.json: $.attention.target_quantization_error: must be > 0 when use_attentions is true");
  CHECK(err(R"({"method":"uniform","attention":{"target_quantization_error":{"k":1}}})") ==
        "p.json: $.attention.target_quantization_error.v: is required (a number > 0)");
  CHECK_THROWS_WITH(parse(R"({"method":"uniform","attention":{"target_quantization_error":-2}})"),
                    Catch::StartsWith("p.json: $.attention.target_quantization_error: must be in (0, "));
  CHECK(err(R"({"method":"uniform","attention":{"q_norm":-1}})") == "p.json: $.attention.q_norm: must be a number > 0 or \"measured\"");
  CHECK(err(R"({"method":"uniform","attention":{"last_n":3}})") == "p.json: $.attention.last_n: unknown field");
  CHECK(err(R"({"method":"skvq","calibration":{"mode":"online"},"attention":{"use_attentions":true,"target_quantization_error":1}})") ==
        "p.json: $.attention.use_attentions: applies to methods uniform, kivi and kvmix");
  CHECK(err(R"({"method":"uniform","rules":[{"layer_range":[3,1],"bits":4}]})") ==
        "p.json: $.rules[0].layer_range: must be [first, last] layer indices with 0 <= first <= last");
  CHECK(err(R"({"method":"uniform","rules":[{"head_groups":[0],"bits":9}]})") == "p.json: $.rules[0].bits: must be an integer in 1..8");
  CHECK(err(R"({"method":"uniform","rules":[{"head_group":[0]}]})") == "p.json: $.rules[0].head_group: unknown field");
  CHECK(err(R"({"method":"uniform","k":{"bits":2},"v":{"bits":2},"rules":[{"kind":"v","bits":8}],"budget":{"bit_range":[2,4]}})") ==
        "p.json: $.rules[0].bits: 8 bits is outside budget.bit_range [2, 4]");
  CHECK(err(R"({"method":"uniform","head_group_size":0})") == "p.json: $.head_group_size: must be an integer in 1..65536");
}

TEST_CASE("head-group rules: layer ranges and groups of heads, overrides win") {
  // 4 layers x 4 KV heads, groups of 2 heads (group 1 = heads 2, 3). Base 2 bits; the rule gives K of
  // layers 1..2, group 1, 4 bits; the override gives K of layer 2 head 3 8 bits.
  const Policy p = parse(R"({"method":"uniform","k":{"bits":2},"v":{"bits":2},"head_group_size":2,
      "rules":[{"layer_range":[1,2],"head_groups":[1],"kind":"k","bits":4}],
      "overrides":[{"layers":[2],"heads":[3],"kind":"k","bits":8}]})");
  const ModelConfig c = config(4, 4, 8);
  const auto plans = plan_replay_heads(c, p);
  for (int l = 0; l < 4; ++l)
    for (int h = 0; h < 4; ++h) {
      INFO("layer " << l << " head " << h);
      int want_k = 2;
      if ((l == 1 || l == 2) && h >= 2) want_k = 4;
      if (l == 2 && h == 3) want_k = 8;
      CHECK(plan_of(plans, 4, l, h, 'k').quant.bits == want_k);
      CHECK(plan_of(plans, 4, l, h, 'v').quant.bits == 2);
    }
  // 32 entries: 3 at 4 bits, 1 at 8, 28 at 2 -> (12 + 8 + 56) / 32 = 2.375.
  CHECK(nominal_bits_per_entry(c, p) == 2.375);
  CHECK_NOTHROW(plan_replay_heads(config(2, 4, 8), p));  // layer_range [1, 2] starts inside a 2-layer model
}

TEST_CASE("rule targets outside the model are errors naming the JSON path") {
  const ModelConfig c = config(2, 4, 8);
  CHECK_THROWS_WITH(plan_replay_heads(c, parse(R"({"method":"uniform","rules":[{"layers":[5],"bits":4}]})")),
                    Catch::Contains("$.rules[0].layers: layer 5 is outside the model (2 layers)"));
  CHECK_THROWS_WITH(plan_replay_heads(c, parse(R"({"method":"uniform","rules":[{"layer_range":[2,9],"bits":4}]})")),
                    Catch::Contains("$.rules[0].layer_range: starts at layer 2, the model has 2 layers"));
  CHECK_THROWS_WITH(plan_replay_heads(c, parse(R"({"method":"uniform","head_group_size":2,"rules":[{"head_groups":[2],"bits":4}]})")),
                    Catch::Contains("$.rules[0].head_groups: group 2 is outside the model"));
}

TEST_CASE("calibration-dependent decisions need a calibration mode in replay") {
  const ModelConfig c = config(2, 2, 8);
  CHECK_THROWS_WITH(QuantizedKvCache(c, load_preset("kvmix-3")),
                    Catch::Contains("$.outlier_heads.rule: ranking heads needs $.calibration.mode"));
  CHECK_THROWS_WITH(QuantizedKvCache(c, load_preset("kvsmooth-4")), Catch::Contains("$.smooth: KVSmooth needs $.calibration.mode"));
  CHECK_THROWS_WITH(check_bit_budget(c, load_preset("kvmix-3")), Catch::Contains("$.outlier_heads.rule"));
  // Online: the cache waits for calibrate(); flushing a prompt before it is an error, not a silent default.
  QuantizedKvCache online(c, parse(R"({"method":"kvmix","k":{"axis":"head"},"v":{"axis":"token"},
                                       "outlier_heads":{"rule":"count","count":1},"calibration":{"mode":"online"}})"));
  CHECK(online.awaiting_calibration());
  std::vector<float> kv(static_cast<size_t>(2) * 3 * 8, 1.0f);
  for (int l = 0; l < 2; ++l) online.append(l, kv.data(), kv.data(), 3);
  CHECK_THROWS_WITH(online.flush(), Catch::Contains("online calibration must run"));
}

TEST_CASE("calibration ranks a planted outlier K head and keeps it fp16") {
  // 3 layers x 2 KV heads, keys N(0, 1) except (layer 1, head 0) whose channel 5 carries +-60: its strat1
  // (one int8 scale per head) MSE is ~(60/127)^2/12 per element against ~(3.5/127)^2/12 elsewhere.
  const ModelConfig c = config(3, 2, 8);
  const int T = 64, D = 8;
  Calibration cal = zero_calibration(c, T);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < D; ++d) {
          at(cal.k[l], T, D, h, t, d) = round_to_f16(nd(rng));
          at(cal.v[l], T, D, h, t, d) = round_to_f16(nd(rng));
        }
  for (int t = 0; t < T; ++t) at(cal.k[1], T, D, 0, t, 5) = t % 2 ? 60.0f : -60.0f;
  for (const char* rule : {R"("rule":"count","count":1)", R"("rule":"mse_over_median","ratio":5)", R"("rule":"mse_share","share":0.5)"}) {
    INFO(rule);
    const Policy p = parse(std::string(R"({"method":"kvmix","k":{"axis":"head"},"v":{"axis":"token"},"calibration":{"mode":"online"},
                                           "outlier_heads":{)") + rule + "}}");
    const auto plans = plan_replay_heads(c, p, &cal);
    for (int l = 0; l < 3; ++l)
      for (int h = 0; h < 2; ++h) {
        CHECK(plan_of(plans, 2, l, h, 'k').quant.full_precision == (l == 1 && h == 0));
        CHECK_FALSE(plan_of(plans, 2, l, h, 'v').quant.full_precision);
      }
    // (16 + 11 * 8) / 12 entries.
    CHECK(nominal_bits_of_plans(plans) == Approx((16.0 + 11 * 8.0) / 12));
  }
  // Through the cache: calibrate() then the planted head's K comes back exact, the others do not.
  QuantizedKvCache cache(c, parse(R"({"method":"kvmix","k":{"axis":"head"},"v":{"axis":"token"},"calibration":{"mode":"online"},
                                      "outlier_heads":{"rule":"count","count":1}})"));
  for (int l = 0; l < 3; ++l) {
    std::vector<float> k(cal.k[l]), v(cal.v[l]);
    cache.append(l, k.data(), v.data(), T);
  }
  cache.calibrate(cal);
  cache.flush();
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h) {
      const KvLayerView view = cache.view(l);
      double err = 0;
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < D; ++d) err += std::fabs(view.k[h * view.head_stride + t * D + d] - at(cal.k[l], T, D, h, t, d));
      if (l == 1 && h == 0) CHECK(err == 0.0);
      else CHECK(err > 0.0);
    }
}

TEST_CASE("KVSmooth in replay: scales from calibration max |K|, the cache reads s * Q(K / s)") {
  // One head, D = 4, rotate-half pairs (0, 2) and (1, 3). Calibration max |K| per channel
  // [8, 1, 2, 0.5] -> s = [max(8, 2), max(1, 0.5), 8, 1] = [8, 1, 8, 1] (factor 1).
  const ModelConfig c = config(1, 1, 4);
  const int T = 2, D = 4;
  Calibration cal = zero_calibration(c, T);
  const float kc[T][D] = {{8, -1, 2, 0.25f}, {-4, 0.5f, -1, -0.5f}};
  for (int t = 0; t < T; ++t)
    for (int d = 0; d < D; ++d) at(cal.k[0], T, D, 0, t, d) = kc[t][d];
  const Policy p = parse(R"({"method":"uniform","k":{"bits":4,"axis":"token","symmetric":true},"v":{"fp16":true},
                             "smooth":{"factor":1},"calibration":{"mode":"online"}})");
  const auto plans = plan_replay_heads(c, p, &cal);
  REQUIRE(plans[0].smooth == std::vector<float>{8, 1, 8, 1});
  // New keys through the cache equal quantize_tensor on K / s, times s.
  const float k[3][D] = {{16, 0.5f, -4, 1}, {-8, -1, 6, 0.75f}, {1, 1, 1, 1}};
  QuantizedKvCache cache(c, p, plans);
  std::vector<float> kin(&k[0][0], &k[0][0] + 3 * D), vin(3 * D, 0.0f);
  cache.append(0, kin.data(), vin.data(), 3);
  cache.flush();
  const KvLayerView view = cache.view(0);
  const float s[D] = {8, 1, 8, 1};
  for (int t = 0; t < 3; ++t) {
    float scaled[D], y[D];
    for (int d = 0; d < D; ++d) scaled[d] = k[t][d] / s[d];
    quantize_tensor(scaled, 1, D, p.k).dequantize(y);
    for (int d = 0; d < D; ++d) CHECK(view.k[t * D + d] == y[d] * s[d]);
  }
  // Token 0: K / s = [2, 0.5, -0.5, 1], absmax 2, step 2/7: codes [7, 2, -2, 4] (0.5 * 3.5 = 1.75 -> 2),
  // read back [2, 4/7, -4/7, 8/7] * s = [16, 0.5714, -4.5714, 1.1429].
  CHECK(view.k[0] == Approx(16.0f).epsilon(test::tol::kFp16));  // fp16 scale 2/7 -> 0.28564
  CHECK(view.k[1] == Approx(4.0f / 7).epsilon(test::tol::kFp16));
  CHECK(view.k[2] == Approx(-32.0f / 7).epsilon(test::tol::kFp16));
  CHECK(view.k[3] == Approx(8.0f / 7).epsilon(test::tol::kFp16));
}

TEST_CASE("attention-guided bits follow QAQ's bounds and the budget, worked by hand") {
  // 1 layer, 2 KV heads (1 query head each), T = 4 calibration tokens, D = 2. Queries are zero, so the
  // last query row (last_n_attentions 1) attends uniformly to its 4 keys: a = 1/4 for both heads.
  // sigma = sqrt(3) / 56:
  //   V: e = sqrt(12 / T) sigma / a = sqrt(3) * sqrt(3) / 56 * 4 = 3 / 14 = 0.2142857
  //   K: q_norm 12 (given): e = sqrt(12 / 12 * ln(T^3 / (T - 1) sigma^2 + 1)) = sqrt(ln(64/3 * 3/3136 + 1))
  //                           = sqrt(ln(1.0204082)) = 0.1421362
  // Ranges (per-token, whole row, asymmetric): K 0.25 on both heads; V 2.5 (head 0) and 15 (head 1).
  //   K: 0.25 / (2 * 0.1421362) = 0.8795 -> ceil(log2(1.8795)) = 1 -> bit_range floor 2
  //   V0: 2.5 / (3 / 7) = 5.833 -> ceil(log2(6.833)) = 3;  V1: 15 / (3 / 7) = 35 -> ceil(log2(36)) = 6
  const ModelConfig c = config(1, 2, 2);
  const int T = 4, D = 2;
  Calibration cal = zero_calibration(c, T);
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < T; ++t) {
      at(cal.k[0], T, D, h, t, 0) = 0.25f;
      at(cal.v[0], T, D, h, t, 1) = h == 0 ? 2.5f : 15.0f;
    }
  auto policy = [](const std::string& budget) {
    return parse(R"({"method":"uniform","k":{"bits":2,"axis":"token"},"v":{"bits":2,"axis":"token"},"calibration":{"mode":"online"},
                     "attention":{"use_attentions":true,"last_n_attentions":1,"target_quantization_error":0.030929478706587,
                                  "q_norm":12},"budget":{)" + budget + "}}");
  };
  auto bits = [&](const std::vector<HeadQuantPlan>& plans) {
    return std::vector<int>{plans[0].quant.bits, plans[2].quant.bits, plans[1].quant.bits, plans[3].quant.bits};  // K0 K1 V0 V1
  };
  const auto free = plan_replay_heads(c, policy(R"("bit_range":[2,8])"), &cal);
  CHECK(bits(free) == std::vector<int>{2, 2, 3, 6});
  CHECK(free[1].tolerance == Approx(3.0 / 14));
  CHECK(free[0].tolerance == Approx(0.1421362));
  CHECK(free[3].range == 15.0);
  // Budget: lower one bit at a time the group whose half-step error after lowering, relative to its
  // tolerance (demand / (2^(b-1) - 1), demand = r / 2e), is smallest. Demands: V0 5.833, V1 35.
  //   cap 2.75 (sum 11 of 13): V1 6->5 (35/31 = 1.13 < V0 5.833/3 = 1.94), then V0 3->2 (1.94 < 35/15 = 2.33)
  //   cap 2.5 (sum 10): then V1 5->4 (the only one above the floor); cap 2.25 (sum 9): V1 4->3
  CHECK(bits(plan_replay_heads(c, policy(R"("bit_range":[2,8],"max_avg_bits":2.75)"), &cal)) == std::vector<int>{2, 2, 2, 5});
  CHECK(bits(plan_replay_heads(c, policy(R"("bit_range":[2,8],"max_avg_bits":2.5)"), &cal)) == std::vector<int>{2, 2, 2, 4});
  CHECK(bits(plan_replay_heads(c, policy(R"("bit_range":[2,8],"max_avg_bits":2.25)"), &cal)) == std::vector<int>{2, 2, 2, 3});
  CHECK(bits(plan_replay_heads(c, policy(R"("bit_range":[2,4])"), &cal)) == std::vector<int>{2, 2, 3, 4});
  CHECK_THROWS_WITH(plan_replay_heads(c, policy(R"("bit_range":[2,8],"max_avg_bits":1.9)"), &cal),
                    Catch::Contains("$.budget.max_avg_bits: 1.9 bits per KV entry cannot be met"));
  // Head groups: with groups of 2 heads the V group takes the larger range (15) -> 6 bits for both.
  Policy grouped = policy(R"("bit_range":[2,8])");
  grouped.head_group_size = 2;
  CHECK(bits(plan_replay_heads(c, grouped, &cal)) == std::vector<int>{2, 2, 6, 6});
}

TEST_CASE("measured q_norm and recent attention come from the calibration's last query rows") {
  // 1 layer, 1 KV head, 2 query heads (GQA), D = 2, T = 3. Last row of query head 1 is [2, 0]: q_norm =
  // |q|^2 / D = 2. Keys [0, 0], [0, 0], [ln 4 * sqrt(2) / 2, 0]: that row's logits are [0, 0, ln 4] ->
  // probabilities [1/6, 1/6, 4/6], so the largest recent attention is 2/3.
  const ModelConfig c = config(1, 1, 2, 2);
  const int T = 3, D = 2;
  Calibration cal = zero_calibration(c, T);
  at(cal.q[0], T, D, 1, 2, 0) = 2.0f;
  at(cal.k[0], T, D, 0, 2, 0) = static_cast<float>(std::log(4.0) * std::sqrt(2.0) / 2.0);
  CHECK(measured_q_norm(cal, 0, 0, 2, 1) == Approx(2.0));
  CHECK(measured_q_norm(cal, 0, 0, 1, 1) == 0.0);
  CHECK(max_recent_attention(cal, 0, 0, 2, 1) == Approx(2.0 / 3).epsilon(1e-6));
  CHECK(max_recent_attention(cal, 0, 0, 1, 1) == Approx(1.0 / 3));  // query head 0: zeros, uniform over 3 keys
  CHECK(max_recent_attention(cal, 0, 0, 1, 2) == Approx(1.0 / 2));  // row 1 sees 2 keys
}

TEST_CASE("outliers_ratio keeps the extremes of each quantization group exact, worked by hand") {
  const Policy p = parse(R"({"method":"uniform","k":{"bits":4,"axis":"token","group_size":0},"v":{"fp16":true},
                             "outliers_ratio":{"k":0.25,"v":0}})");
  CHECK(p.outliers_ratio_k == 0.25);
  CHECK(canonical_policy_json(parse_policy(policy_to_json(p), "rt")) == canonical_policy_json(p));
  CHECK_THROWS_WITH(parse(R"({"method":"uniform","outliers_ratio":0.6})"), Catch::StartsWith("p.json: $.outliers_ratio: must be in [0, 0.5"));
  CHECK_THROWS_WITH(parse(R"({"method":"uniform","outliers_ratio":{"q":0.1}})"), Catch::Contains("$.outliers_ratio.q: unknown field"));
  CHECK_THROWS_WITH(parse(R"({"method":"skvq","outliers_ratio":0.1})"),
                    Catch::Contains("$.outliers_ratio: applies to methods uniform, kivi and kvmix"));
  // One token, D = 8: [0, 1, 2, 3, 4, 5, 6, 100]. ratio 0.25 -> m = ceil(0.125 * 8) = 1: 0 and 100 are
  // kept exactly, the rest is quantized on [1, 6]: scale 5/15 (fp16 0.33325195), min 1, codes
  // [_, 0, 3, 6, 9, 12, 15, _]. Bits: 8 codes * 4 + fp16 scale + fp16 min + 2 * (16 + log2 8) = 102;
  // V fp16: 8 * 16 = 128.
  const ModelConfig c = config(1, 1, 8);
  QuantizedKvCache cache(c, p);
  std::vector<float> k = {0, 1, 2, 3, 4, 5, 6, 100}, v(8, 0.5f);
  cache.append(0, k.data(), v.data(), 1);
  cache.flush();
  const KvLayerView view = cache.view(0);
  CHECK(view.k[0] == 0.0f);
  CHECK(view.k[7] == 100.0f);
  CHECK(view.k[1] == 1.0f);
  const float s = 0.33325195f;
  for (int i = 2; i < 7; ++i) CHECK(view.k[i] == Approx(1.0f + 3 * (i - 1) * s));
  CHECK(cache.stored_bits() == 102 + 128);
  // Without outliers the range is [0, 100] (step 6.67): token 2 reads back 0.
  QuantizedKvCache plain(c, parse(R"({"method":"uniform","k":{"bits":4,"axis":"token","group_size":0},"v":{"fp16":true}})"));
  plain.append(0, k.data(), v.data(), 1);
  plain.flush();
  CHECK(plain.view(0).k[2] == 0.0f);
  CHECK(plain.squared_error() > 100 * cache.squared_error());
}
