// `kvscope replay` end to end: TEST_METRICS lines, the stored run, clear errors, Ctrl-C stores nothing.
#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "storage/run_store.h"
#include "test_util.h"

extern char** environ;

namespace {

using kvscope::test::run_cli;
using kvscope::test::slurp;
using Result = kvscope::test::CliRun;

std::string model(const std::string& name) { return kvscope::test::models_dir() + "/" + name; }
std::string data(const std::string& name) { return kvscope::test::models_dir() + "/../data/" + name; }

}  // namespace

TEST_CASE("replay prints one TEST_METRICS line per slice and stores the run") {
  TempDir dir;
  const std::string db = dir.path("runs.sqlite");
  const auto r = run_cli(dir, "replay --model " + model("stories260K") + " --preset kivi-2 --workload 'text:" +
                                  data("tinystories_validation_head.txt") +
                                  ";window=64;n=1' --workload passkey:len=200,depth=0.5,n=1 --db " + db);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("TEST_METRICS: ", 0) != 0) continue;
    ++n;
    for (const char* f : {"quality_main=", "quality_delta_vs_ref=", "peak_kv_memory_mb=", "decode_tokens_per_s=",
                          "prefill_latency_ms=", "calibration_cost_s=", "avg_bits_per_kv_token=", "cache_error=",
                          "greedy_match_ratio=", "next_token_kl=", "ppl_delta="})
      CHECK(line.find(f) != std::string::npos);
  }
  CHECK(n == 2);
  CHECK(r.err.find("replay: ") != std::string::npos);  // progress on stderr
  kvscope::RunStore store(db);
  const auto runs = store.list_runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].kind == "replay");
  const auto run = store.load_run(runs[0].id);
  CHECK(run.replay_metrics.size() >= 22);
}

TEST_CASE("replay bad input: one clear error line, nothing stored") {
  TempDir dir;
  const std::string db = dir.path("runs.sqlite");
  const std::string base = "replay --model " + model("stories260K") + " --db " + db + " ";
  auto r = run_cli(dir, base + "--preset kivi-3 --workload passkey:len=200,depth=0,n=1");
  CHECK(r.rc == 1);
  CHECK(r.err.find("kvscope: error:") != std::string::npos);
  CHECK(r.err.find("kivi-3") != std::string::npos);
  r = run_cli(dir, base + "--preset uniform-8 --bit-budget 4 --workload passkey:len=200,depth=0,n=1");
  CHECK(r.rc == 1);
  CHECK(r.err.find("over the budget of 4") != std::string::npos);
  r = run_cli(dir, base + "--preset kivi-2 --workload passkey:len=4000,depth=0,n=1");
  CHECK(r.rc == 1);
  CHECK(r.err.find("max_position_embeddings (512)") != std::string::npos);
  std::ofstream(dir.path("bad.workload")) << "text:\n";
  r = run_cli(dir, base + "--preset kivi-2 --workload file:" + dir.path("bad.workload"));
  CHECK(r.rc == 1);
  CHECK(r.err.find("bad.workload:1") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(db));
}

TEST_CASE("Ctrl-C during replay stores nothing") {
  TempDir dir;
  const std::string db = dir.path("runs.sqlite"), err = dir.path("err.txt");
  // Long enough to be interrupted: many windows of text on the 8-layer model.
  const std::string script = "exec " + std::string(KVSCOPE_BIN) + " replay --model " + model("tinystories-llama-8L") +
                             " --preset kivi-2 --workload 'text:" + data("tinystories_validation_head.txt") +
                             ";window=512;n=40' --db " + db + " >/dev/null 2>" + err;
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) == 0);
  // A failed check below must not leave the replay running: reap it on every exit path.
  struct Reaper {
    pid_t pid;
    bool reaped = false;
    ~Reaper() {
      if (!reaped) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
    }
  } reaper{pid};
  // Wait until the replay is under way (its second item), then interrupt it. Generous: a loaded
  // 2-core CI machine loads the model and tokenizes slowly.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (slurp(err).find("item 2/") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {  // ended before it could be interrupted
      reaper.reaped = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO(slurp(err));
  REQUIRE(!reaper.reaped);
  REQUIRE(slurp(err).find("item 2/") != std::string::npos);
  REQUIRE(kill(pid, SIGINT) == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  reaper.reaped = true;
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(slurp(err).find("interrupted") != std::string::npos);
  if (std::filesystem::exists(db)) {
    kvscope::RunStore store(db);
    CHECK(store.list_runs().empty());
  }
}
