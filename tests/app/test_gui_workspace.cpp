// The GUI's workspace without a window: open a dump, edit the policy, re-quantize in the
// background, cancel, save a run into a run store and the policy into a file, capture checks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "app/gui/workspace.h"
#include "core/synth/synth.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "storage/run_store.h"
#include "test_util.h"
#include "tests/app/workspace_ticks.h"

using namespace kvscope;
using namespace kvscope::gui;
using State = views::JobRow::State;

namespace {

using kvscope::gui::test::settle;
using kvscope::gui::test::tick_until;

KvDump small_dump(int layers = 2, int tokens = 512) {  // longer than kivi's 128-token fp16 window
  SynthOptions so;
  so.layers = layers;
  so.tokens = tokens;
  so.planted = {{1, 0, 50.0f}};
  return make_synthetic_dump(so);
}

}  // namespace

TEST_CASE("workspace: open a dump, quantize it, edit the policy, save the run and the policy") {
  TempDir tmp;
  const std::string dump_path = tmp.path("small.safetensors");
  save_dump(dump_path, small_dump());
  std::vector<std::string> opened;
  WorkspaceHooks hooks;
  hooks.dump_opened = [&](const std::string& p) { opened.push_back(p); };
  Workspace ws(hooks);
  CHECK(ws.policy().name == "kivi-2");  // the editor starts on kivi-2

  ws.open_dump(dump_path);
  settle(ws);
  REQUIRE(ws.errors().empty());
  REQUIRE(ws.dump());
  CHECK(ws.dump()->shape().layers == 2);
  CHECK(opened == std::vector<std::string>{dump_path});
  REQUIRE(ws.report());
  CHECK(ws.report()->policy_name == "kivi-2");
  CHECK(ws.report_gen() == ws.policy_gen());
  CHECK(ws.report()->attn_queries > 0);  // the attention phase delivered too
  const double bits2 = ws.report()->bits_per_element;

  // A slider release re-quantizes at once; more bits cost more and lower the error.
  const double nmse2 = ws.report()->k_nmse;
  ws.set_field("bits", "4", "test");
  CHECK(ws.requantize_due());
  settle(ws);
  REQUIRE(ws.report());
  CHECK(ws.report_gen() == ws.policy_gen());
  CHECK(ws.report()->bits_per_element > bits2);
  CHECK(ws.report()->k_nmse < nmse2);
  CHECK_THROWS_WITH(ws.set_field("colour", "4", "script.txt:3"), Catch::StartsWith("script.txt:3: unknown field 'colour'"));

  // Drill-down: the selected head's profile follows the dequantized result.
  ws.select_head('k', 1, 0);
  REQUIRE(ws.profile());
  CHECK(ws.profile()->layer == 1);
  ws.clear_selection();
  CHECK(!ws.profile());

  // Saving before a store is open opens the one given; the run lands there.
  const std::string db = tmp.path("runs.sqlite");
  ws.open_store(db);
  ws.save_run();
  REQUIRE(ws.errors().empty());
  REQUIRE(ws.runs().rows().size() == 1);
  {
    RunStore store(db, {.read_only = true});
    auto runs = store.list_runs();
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].policy_name == "kivi-2");
  }
  CHECK_THAT(ws.status(), Catch::StartsWith("saved as run "));

  // The policy file reads back as the policy in the editor.
  ws.save_policy(tmp.path("p.json"));
  REQUIRE(ws.errors().empty());
  CHECK(policy_to_json(load_policy_file(tmp.path("p.json"))) == policy_to_json(ws.policy()));
  ws.save_policy(tmp.path("no-such-dir/p.json"));
  REQUIRE(ws.errors().size() == 1);
  CHECK_THAT(ws.errors()[0], Catch::StartsWith(tmp.path("no-such-dir/p.json") + ": cannot create the file"));
}

TEST_CASE("workspace: a drag is debounced, the latest edit wins, a cancelled job leaves its rows stale") {
  Workspace ws;
  ws.set_dump(std::make_shared<const KvDump>(small_dump(24, 1024)), "big");
  ws.tick();  // starts the quantization of the committed dump
  auto rows = ws.jobs().rows();
  REQUIRE(rows.size() == 1);
  ws.jobs().cancel(rows[0].id);
  tick_until(ws, [&] { return !ws.jobs().busy(); });
  CHECK(ws.jobs().rows()[0].state == State::Cancelled);
  // The layers delivered before the cancel stay on screen (they are right for this policy); the
  // rest is stale and the result is not complete.
  CHECK(ws.report_gen() != ws.policy_gen());
  const auto stale = ws.stale_rows('k');
  CHECK(std::count(stale.begin(), stale.end(), true) > 0);
  CHECK(ws.errors().empty());  // a cancel is not an error

  // A drag (no commit) waits for the debounce; a release right after it starts at once.
  ws.policy().k.bits = 3;
  ws.policy_edited(false);
  ws.tick();
  CHECK(ws.requantize_due());
  CHECK(!ws.jobs().busy());
  ws.set_field("bits", "4", "test");
  ws.tick();
  CHECK(!ws.requantize_due());
  // Two releases in a row: the second supersedes the first, whose result is dropped.
  ws.set_field("bits", "8", "test");
  settle(ws);
  REQUIRE(ws.report());
  CHECK(ws.report_gen() == ws.policy_gen());
  CHECK(ws.report()->bits_per_element > 8);
}

TEST_CASE("workspace: errors go to the error list, not out of the frame") {
  TempDir tmp;
  Workspace ws;
  ws.save_run();  // nothing quantized yet
  REQUIRE(ws.errors().size() == 1);
  CHECK_THAT(ws.errors()[0], Catch::Contains("no quantization result yet"));
  ws.errors().clear();
  ws.load_preset("no-such-preset");
  CHECK(ws.errors().size() == 1);
  ws.errors().clear();
  ws.open_dump(tmp.path("missing.safetensors"));
  tick_until(ws, [&] { return !ws.jobs().busy(); });
  ws.tick();
  REQUIRE(ws.errors().size() == 1);
  CHECK_THAT(ws.errors()[0], Catch::Contains("missing.safetensors"));
  CHECK(!ws.dump());
}

TEST_CASE("workspace: capture refuses an empty text and a context longer than the model's") {
  TempDir tmp;
  const ModelEntry model = describe_model(kvscope::test::models_dir() + "/stories260K", "stories260K");
  REQUIRE(model.error.empty());
  Workspace ws;
  std::ofstream(tmp.path("empty.txt")).flush();
  ws.capture(model, tmp.path("empty.txt"), 64);
  tick_until(ws, [&] { return !ws.jobs().busy(); });
  ws.tick();
  REQUIRE(ws.errors().size() == 1);
  CHECK_THAT(ws.errors()[0], Catch::Contains("empty.txt: the text file is empty"));
  ws.errors().clear();
  const int too_many = model.config.max_position_embeddings + 1;
  ws.capture(model, "", too_many);
  tick_until(ws, [&] { return !ws.jobs().busy(); });
  ws.tick();
  REQUIRE(ws.errors().size() == 1);
  CHECK_THAT(ws.errors()[0], Catch::Contains("exceed the model's max_position_embeddings"));
  CHECK(!ws.dump());
  // A text with a byte-order mark captures like the same text without one.
  std::ofstream(tmp.path("bom.txt")) << "\xEF\xBB\xBFOnce upon a time there was a cat.";
  ws.errors().clear();
  ws.set_capture_dir(tmp.path("captures"));
  ws.capture(model, tmp.path("bom.txt"), 64);
  tick_until(ws, [&] { return ws.dump() != nullptr || !ws.errors().empty(); }, 120);
  REQUIRE(ws.errors().empty());
  CHECK(ws.dump()->shape().layers == model.config.num_layers);

  // The capture streamed to a file (capture_model_to_file, as `kvscope dump` does) and the GUI
  // reads it mapped; the CLI on the same text writes the same tokens and tensors.
  REQUIRE(ws.dump()->file_backed());
  const std::string gui_file = ws.dump()->reader()->path();
  CHECK(std::filesystem::path(gui_file).parent_path() == std::filesystem::path(tmp.path("captures")));
  const auto cli = kvscope::test::run_cli(tmp, "dump --model " + model.dir + " --text " + tmp.path("bom.txt") + " --tokens 64 --out " +
                                                   tmp.path("cli.safetensors"));
  INFO(cli.err);
  REQUIRE(cli.rc == 0);
  const KvDump a = load_dump(gui_file), b = load_dump(tmp.path("cli.safetensors"));
  CHECK(a.meta.token_ids == b.meta.token_ids);
  CHECK(a.meta.workload == b.meta.workload);
  CHECK(a.meta.prompt == b.meta.prompt);
  REQUIRE(a.shape.layers == b.shape.layers);
  for (int l = 0; l < a.shape.layers; ++l) {
    CHECK(a.layers[l].k == b.layers[l].k);
    CHECK(a.layers[l].v == b.layers[l].v);
    CHECK(a.layers[l].q == b.layers[l].q);
  }
}
