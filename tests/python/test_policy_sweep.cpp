// A JSON policy and a policy script making the same choices give identical results in quantize,
// replay (the script's choose_bits asked per block) and a sweep naming both.
#include <catch2/catch.hpp>

#include <fstream>

#include <nlohmann/json.hpp>

#include "storage/run_store.h"
#include "test_util.h"

using namespace kvscope;
using kvscope::test::run_cli;

namespace {

const std::string kPolicies = std::string(KVSCOPE_SOURCE_DIR) + "/tests/python/data/policies";

// Replay metrics that measure time rather than the result.
bool timing(const std::string& name) {
  return name.find("tokens_per_s") != std::string::npos || name == "prefill_latency_ms" || name == "calibration_cost_s";
}

void check_same_replay(const StoredRun& a, const StoredRun& b) {
  REQUIRE(a.replay_metrics.size() == b.replay_metrics.size());
  REQUIRE(!a.replay_metrics.empty());
  for (size_t i = 0; i < a.replay_metrics.size(); ++i) {
    CAPTURE(a.replay_metrics[i].name);
    CHECK(a.replay_metrics[i].name == b.replay_metrics[i].name);
    if (!timing(a.replay_metrics[i].name)) CHECK(a.replay_metrics[i].value == b.replay_metrics[i].value);
  }
}

void check_same_quantize(const StoredRun& a, const StoredRun& b) {
  REQUIRE(a.report.per_head.size() == b.report.per_head.size());
  REQUIRE(!a.report.per_head.empty());
  for (size_t i = 0; i < a.report.per_head.size(); ++i) {
    CAPTURE(i);
    CHECK(a.report.per_head[i].bits == b.report.per_head[i].bits);
    CHECK(a.report.per_head[i].nmse == b.report.per_head[i].nmse);
    CHECK(a.report.per_head[i].max_abs == b.report.per_head[i].max_abs);
  }
  CHECK(a.report.bits_per_element == b.report.bits_per_element);
}

}  // namespace

TEST_CASE("same choices from JSON and from a script: identical quantize, replay and sweep results", "[script][sweep][cli]") {
  TempDir dir;
  const std::string model = kvscope::test::models_dir() + "/tinystories-llama-8L";
  const std::string text = std::string(std::getenv("KVSCOPE_TEST_DATA")) + "/pg11_alice_in_wonderland.txt";
  const std::string json_policy = kPolicies + "/same_choices.json", script = kPolicies + "/same_choices.py";
  REQUIRE(run_cli(dir, "synth --layers 2 --kv-heads 2 --tokens 256 --out " + dir.path("d.safetensors")).rc == 0);

  // quantize and replay, one command each, each into its own store.
  for (const auto& [name, policy] : {std::pair{"json", json_policy}, std::pair{"py", script}}) {
    const std::string db = dir.path(std::string(name) + ".sqlite");
    REQUIRE(run_cli(dir, "quantize --dump " + dir.path("d.safetensors") + " --policy " + policy + " --db " + db).rc == 0);
    REQUIRE(run_cli(dir, "replay --model " + model + " --policy " + policy + " --max-tokens 40 --workload \"text:" + text +
                             ";window=160;n=1\" --db " + db).rc == 0);
  }
  RunStore sj(dir.path("json.sqlite"), {.read_only = true}), sp(dir.path("py.sqlite"), {.read_only = true});
  auto runs_of = [](RunStore& s) {
    std::vector<StoredRun> out;
    for (const RunListing& l : s.list_runs()) out.push_back(s.load_run(l.id));
    std::sort(out.begin(), out.end(), [](const StoredRun& x, const StoredRun& y) { return x.id < y.id; });
    return out;
  };
  const std::vector<StoredRun> rj = runs_of(sj), rp = runs_of(sp);
  REQUIRE(rj.size() == 2);
  REQUIRE(rp.size() == 2);
  check_same_quantize(rj[0], rp[0]);
  check_same_replay(rj[1], rp[1]);
  CHECK(!rp[1].replay_items.at(0).blocks.empty());  // the script's per-block choices were asked and stored
  CHECK(rj[1].replay_items.at(0).blocks.empty());

  // A sweep naming both: 2 quantize cells and 2 replay cells, pairwise identical.
  const std::string spec = dir.path("spec.json");
  std::ofstream(spec) << nlohmann::json{{"name", "same"},
                                        {"dumps", {dir.path("d.safetensors")}},
                                        {"models", {model}},
                                        {"workloads", {"text:" + text + ";window=160;n=1"}},
                                        {"methods", {{{"policy", json_policy}}, {{"policy", script}}}},
                                        {"replay", {{"max_tokens", 40}}}}
                             .dump();
  const auto r = run_cli(dir, "sweep --spec " + spec + " --db " + dir.path("sweep.sqlite"));
  INFO(r.err);
  REQUIRE(r.rc == 0);
  RunStore ss(dir.path("sweep.sqlite"), {.read_only = true});
  const std::vector<StoredRun> cells = runs_of(ss);
  REQUIRE(cells.size() == 4);  // dump x (json, py), then model x workload x (json, py)
  check_same_quantize(cells[0], cells[1]);
  check_same_replay(cells[2], cells[3]);
  check_same_quantize(cells[0], rj[0]);
  // (Replay cells are not compared with the commands' runs: sweeps run BLAS on one thread, whose sums
  // differ in the last bits from the command's, app/sweep_runner.cpp.)
  CHECK(cells[1].policy_hash != cells[0].policy_hash);  // the script's record (source, hash) is part of its policy
  CHECK(cells[3].replay_items.at(0).blocks == rp[1].replay_items.at(0).blocks);
}
