// Policies v2 bit budget: parsing with JSON paths, round trip, and the replay-time average cap.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/replay/replay.h"
#include "core/util/error.h"

using namespace kvscope;

namespace {

Policy parse(const std::string& text) { return parse_policy(nlohmann::json::parse(text), "p.json"); }

ModelConfig config(int layers, int kv_heads) {
  ModelConfig c;
  c.num_layers = layers;
  c.num_heads = c.num_kv_heads = kv_heads;
  c.head_dim = 16;
  return c;
}

}  // namespace

TEST_CASE("budget parses, round-trips and names the JSON path of each error") {
  const Policy p = parse(R"({"method":"uniform","k":{"bits":4},"v":{"bits":2},"budget":{"max_avg_bits":4,"bit_range":[2,4]}})");
  CHECK(p.budget.max_avg_bits == 4);
  CHECK(p.budget.min_bits == 2);
  CHECK(p.budget.max_bits == 4);
  const Policy back = parse_policy(policy_to_json(p), "round-trip");
  CHECK(canonical_policy_json(back) == canonical_policy_json(p));
  CHECK(back.budget.max_bits == 4);

  CHECK_THROWS_WITH(parse(R"({"method":"uniform","k":{"bits":8},"budget":{"bit_range":[2,4]}})"),
                    Catch::Contains("p.json: $.k.bits: 8 bits is outside budget.bit_range [2, 4]"));
  CHECK_THROWS_WITH(parse(R"({"method":"uniform","k":{"bits":4},"v":{"bits":4},"budget":{"bit_range":[2,4]},
                              "overrides":[{"layers":[0],"kind":"v","bits":6}]})"),
                    Catch::Contains("$.overrides[0].bits"));
  CHECK_THROWS_WITH(parse(R"({"method":"uniform","budget":{"bit_range":[5,2]}})"), Catch::Contains("$.budget.bit_range"));
  CHECK_THROWS_WITH(parse(R"({"method":"uniform","budget":{"max_avg_bit":4}})"), Catch::Contains("max_avg_bit"));
}

TEST_CASE("max_avg_bits caps the nominal bits averaged over the model's heads") {
  // 2 layers x 2 heads x {K, V} = 8 entries; K of layer 0 at 8 bits, everything else 2:
  // (2 * 8 + 6 * 2) / 8 = 3.5 bits.
  const Policy p = parse(R"({"method":"uniform","k":{"bits":2},"v":{"bits":2},
                             "overrides":[{"layers":[0],"kind":"k","bits":8}],"budget":{"max_avg_bits":3.5}})");
  const ModelConfig c = config(2, 2);
  CHECK(nominal_bits_per_entry(c, p) == 3.5);
  CHECK_NOTHROW(check_bit_budget(c, p));
  CHECK_THROWS_WITH(check_bit_budget(c, p, 3.0), Catch::Contains("over the budget of 3 (--bit-budget)"));
  // On a 1-layer model the same policy averages (2 * 8 + 2 * 2) / 4 = 5 bits.
  CHECK_THROWS_WITH(check_bit_budget(config(1, 2), p),
                    Catch::Contains("$.budget.max_avg_bits") && Catch::Contains("averages 5 bits"));
  // fp16 outlier heads count 16 bits.
  const Policy fp = parse(R"({"method":"kvmix","k":{"axis":"head"},"v":{"axis":"token"},
                              "outlier_heads":{"rule":"list","heads":[[0,0]]}})");
  CHECK(nominal_bits_per_entry(config(1, 2), fp) == (16.0 + 3 * 8.0) / 4);
}
