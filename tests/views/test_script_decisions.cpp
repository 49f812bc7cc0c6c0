// The policy editor's "Script decisions" table (views/policy_editor_view.h) from a script record
// written by hand: bits per head group and kind, the axis the script chose, the residual per layer.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "views/policy_editor_view.h"

using namespace kvscope;

TEST_CASE("script decision table: a row per layer from the script's record", "[views][script]") {
  const nlohmann::json record = {
      {"path", "/tmp/x/mine.py"},
      {"base", "kivi-2"},
      {"hooks", {"choose_bits", "choose_axis", "residual_length"}},
      {"choose_bits", "planned"},
      {"bits", {{"k", {{4, 4, 3, 3}, {2, 2, 2, 16}}}, {"v", {{2, 2, 2, 2}, {3, 3, 2, 2}}}}},
      {"decisions",
       {{{"hook", "residual_length"}, {"layer", 0}, {"value", 64}},
        {{"hook", "choose_axis"}, {"layer", 0}, {"kind", "k"}, {"value", "channel"}},
        {{"hook", "choose_axis"}, {"layer", 1}, {"kind", "v"}, {"value", "token"}}}}};
  const nlohmann::json doc = {{"name", "mine"}, {"method", "kivi"}, {"k", {{"bits", 2}, {"axis", "channel"}, {"group_size", 32}}},
                              {"v", {{"bits", 2}, {"group_size", 32}}}, {"residual_layers", {64, 32}}, {"head_group_size", 2},
                              {"script", record}};
  const Policy p = parse_policy(doc, "test");
  const views::ScriptDecisionTable t = views::script_decision_table(p);
  CHECK(t.script == "mine.py");
  CHECK(t.base == "kivi-2");
  CHECK(t.choose_bits == "planned");
  CHECK(t.hooks.size() == 3);
  CHECK(t.decisions == 3);
  CHECK(t.head_group_size == 2);
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].k_bits == std::vector<int>{4, 3});  // head groups of 2: their first head
  CHECK(t.rows[1].k_bits == std::vector<int>{2, 2});
  CHECK(t.rows[1].v_bits == std::vector<int>{3, 2});
  CHECK(t.rows[0].k_axis == "channel");
  CHECK(t.rows[0].v_axis.empty());
  CHECK(t.rows[1].v_axis == "token");
  CHECK(t.rows[0].residual == 64);
  CHECK(t.rows[1].residual == 32);

  // A JSON policy has no table; a malformed record gives an empty one (never a throw in a frame).
  CHECK(views::script_decision_table(parse_policy(nlohmann::json{{"name", "plain"}, {"method", "kivi"}}, "t")).script.empty());
  Policy broken = p;
  broken.script_json = "{not json";
  CHECK(views::script_decision_table(broken).rows.empty());
}
