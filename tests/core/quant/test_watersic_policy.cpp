// WaterSIC through the policy layer: the preset on a dump meets its rate, values follow the policy.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/policy/policy.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"

using namespace kvscope;

TEST_CASE("watersic-2 on a dump: keys at 2 bits/element (achieved), values fp16, beats uniform-2 keys") {
  SynthOptions so;
  so.layers = 2;
  so.tokens = 512;
  so.planted = {{0, 1, 120.0f}};
  KvDump d = make_synthetic_dump(so);
  QuantizeOptions qo;
  auto w = quantize_dump(d, load_preset("watersic-2"), qo);
  CHECK(w.method == "watersic");
  CHECK(w.k_bits_per_element == Approx(2.0).margin(0.05));
  CHECK(w.v_nmse < 1e-6);  // fp16 rounding only
  CHECK(w.fixed_width_bits_per_element > w.bits_per_element);  // packing the same codes costs more
  auto u = quantize_dump(d, parse_policy(nlohmann::json::parse(R"({"method": "uniform",
      "k": {"bits": 1, "axis": "token", "group_size": 32}, "v": {"fp16": true}})"), "t"), qo);
  // uniform int1 with fp16 scale+min per 32 channels costs 2 bits/element too; WaterSIC's logits are far better.
  REQUIRE(u.k_bits_per_element == 2.0);
  double lw = 0, lu = 0;
  for (size_t i = 0; i < w.attention.size(); ++i) lw += w.attention[i].logit_rmse, lu += u.attention[i].logit_rmse;
  CHECK(lw < 0.5 * lu);
  // Values by the §5.10 fallback at the same rate.
  auto wv = quantize_dump(d, parse_policy(nlohmann::json::parse(R"({"method": "watersic",
      "watersic": {"target_rate": 3.0, "values": "watersic"}})"), "t"), qo);
  CHECK(wv.v_bits_per_element == Approx(3.0).margin(0.05));
  CHECK(wv.v_nmse > 0);
}

TEST_CASE("watersic policy validation") {
  auto err = [](const char* text) {
    try {
      parse_policy(nlohmann::json::parse(text), "p.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(err(R"({"method": "watersic", "watersic": {"target_rate": 0}})") == "p.json: $.watersic.target_rate: must be in (0, 32]");
  CHECK(err(R"({"method": "watersic", "watersic": {"queries": "all"}})") == "p.json: $.watersic.queries: must be \"group\" or \"same_index\"");
  CHECK(err(R"({"method": "uniform", "watersic": {}})") == "p.json: $.watersic: only applies to method 'watersic'");
  CHECK(err(R"({"method": "watersic", "outlier_heads": {"rule": "count", "count": 1}})") ==
        "p.json: $.method: watersic policies take no overrides, outlier heads or smoothing here");
  // residual / sink_tokens are replay's streaming window: they parse, and the dump path refuses them.
  CHECK(err(R"({"method": "watersic", "residual": 8, "sink_tokens": 2})").empty());
  KvDump noq = make_synthetic_dump([] { SynthOptions o; o.layers = 1; o.tokens = 64; o.queries = false; return o; }());
  QuantizeOptions qo;
  qo.attention = false;
  CHECK_THROWS_WITH(quantize_dump(noq, load_preset("watersic-2"), qo), Catch::Contains("watersic needs Q"));
  KvDump withq = make_synthetic_dump([] { SynthOptions o; o.layers = 1; o.tokens = 64; return o; }());
  CHECK_THROWS_WITH(quantize_dump(withq, parse_policy(nlohmann::json::parse(R"({"method": "watersic", "residual": 8})"), "t"), qo),
                    "policy: $.residual: watersic on a dump codes every token (residual and sink_tokens apply to replay only)");
}
