// The GUI's "Open policy script": the workspace plans the script for the open dump, re-plans and
// re-quantizes when the file is saved, and keeps the last good policy when a save breaks it.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/gui/workspace.h"
#include "core/synth/synth.h"
#include "views/policy_editor_view.h"
#include "test_util.h"
#include "tests/app/workspace_ticks.h"

using namespace kvscope;
using namespace kvscope::gui;

namespace {

using kvscope::gui::test::tick_until;

void write_script(const std::string& path, int key_bits) {
  std::ofstream(path) << "class AdaptiveQuantPolicy:\n"
                         "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
                         "        return " << key_bits << " if kv_kind == 'k' else 2\n";
}

// The bits the planned policy gives layer L's first head of `kind` (the script record's bits map).
int planned_bits(const Workspace& ws, const char* kind, int layer) {
  if (ws.policy().script_json.empty()) return -1;
  return nlohmann::json::parse(ws.policy().script_json).at("bits").at(kind).at(layer).at(0).get<int>();
}

}  // namespace

TEST_CASE("workspace: a watched policy script is planned, re-planned on save, and its errors are reported", "[script]") {
  TempDir dir;
  Workspace ws;
  SynthOptions so;
  so.layers = 2;
  so.tokens = 256;
  ws.set_dump(std::make_shared<const KvDump>(make_synthetic_dump(so)), "synthetic");
  const std::string path = dir.path("live.py");
  write_script(path, 4);
  ws.open_policy_script(path);
  REQUIRE(ws.errors().empty());
  CHECK(ws.policy().name == "live");
  CHECK(planned_bits(ws, "v", 1) == 2);
  CHECK(planned_bits(ws, "k", 0) == 4);
  tick_until(ws, [&] { return ws.idle() && ws.report(); });
  const double k_bits_4 = ws.report()->k_bits_per_element;

  // Saving the file re-plans (the stamp is mtime + size: a one-character change is seen) and
  // re-quantizes: the report that follows has the new key bits.
  write_script(path, 3);
  std::filesystem::last_write_time(path, std::filesystem::last_write_time(path) + std::chrono::seconds(2));
  tick_until(ws, [&] { return planned_bits(ws, "k", 0) == 3; }, 10);
  tick_until(ws, [&] { return ws.idle() && ws.report() && ws.report()->k_bits_per_element < k_bits_4; });
  const views::ScriptDecisionTable table = views::script_decision_table(ws.policy());  // what the editor lists
  REQUIRE(table.rows.size() == 2);
  CHECK(table.rows[0].k_bits == std::vector<int>{3, 3});
  CHECK(table.rows[1].v_bits == std::vector<int>{2, 2});

  // A broken save is one error; the policy stays; fixing it re-plans.
  std::ofstream(path) << "class AdaptiveQuantPolicy(:\n";
  std::filesystem::last_write_time(path, std::filesystem::last_write_time(path) + std::chrono::seconds(4));
  tick_until(ws, [&] { return !ws.errors().empty(); }, 10);
  CHECK_THAT(ws.errors().front(), Catch::Matchers::StartsWith(path + ":1: SyntaxError"));
  CHECK(planned_bits(ws, "k", 0) == 3);
  ws.errors().clear();
  write_script(path, 4);
  std::filesystem::last_write_time(path, std::filesystem::last_write_time(path) + std::chrono::seconds(6));
  tick_until(ws, [&] { return planned_bits(ws, "k", 0) == 4; }, 10);
  tick_until(ws, [&] { return ws.idle(); });
}
