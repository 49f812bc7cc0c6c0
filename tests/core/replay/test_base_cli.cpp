// `kvscope replay --save-base F` then `--base F`: the same TEST_METRICS (timings aside), a base from
// another workload refused with one line; `--kl-stats` prints llama.cpp's blocks; `runs show`
// lists the items and the blocks.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <fstream>
#include <map>
#include <sstream>

#include "test_util.h"

namespace {

using kvscope::test::run_cli;
using kvscope::test::slurp;
using Result = kvscope::test::CliRun;

// key -> value text of the TEST_METRICS lines (prefixed by the slice).
std::map<std::string, std::string> metrics(const std::string& out) {
  std::map<std::string, std::string> m;
  std::istringstream lines(out);
  std::string line, slice;
  while (std::getline(lines, line)) {
    if (line.rfind("TEST_METRICS: ", 0) != 0) continue;
    std::istringstream words(line.substr(14));
    std::string kv;
    while (words >> kv) {
      const auto eq = kv.find('=');
      if (kv.substr(0, eq) == "slice") slice = kv.substr(eq + 1);
      else m[slice + "/" + kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  return m;
}

}  // namespace

TEST_CASE("replay --save-base then --base: the same numbers; another workload's base is refused", "[base]") {
  TempDir dir;
  const std::string models = kvscope::test::models_dir();
  const std::string text = "'text:" + models + "/../data/tinystories_validation_head.txt;window=96;n=2'";
  const std::string common = "replay --model " + models + "/stories260K --preset kivi-2 --db " + dir.path("runs.sqlite") + " ";
  const std::string base = dir.path("ref.kvb");
  const auto in_run = run_cli(dir, common + "--workload " + text + " --kl-stats");
  INFO(in_run.err);
  REQUIRE(in_run.rc == 0);
  CHECK(in_run.out.find("====== KL divergence statistics ======") != std::string::npos);
  CHECK(in_run.out.find("Same top p:") != std::string::npos);
  const auto saved = run_cli(dir, common + "--workload " + text + " --save-base " + base);
  REQUIRE(saved.rc == 0);
  const auto reused = run_cli(dir, common + "--workload " + text + " --base " + base);
  INFO(reused.err);
  REQUIRE(reused.rc == 0);
  CHECK(reused.err.find("replay: reference") == std::string::npos);  // the reference is not decoded again
  const auto a = metrics(in_run.out), b = metrics(saved.out), c = metrics(reused.out);
  REQUIRE(a.size() == 57);  // 19 original fields + 38 statistics
  REQUIRE(a.size() == c.size());
  for (const auto& [k, v] : a) {
    if (k.find("tokens_per_s") != std::string::npos || k.find("latency") != std::string::npos ||
        k.find("calibration_cost") != std::string::npos)
      continue;
    INFO(k);
    CHECK(b.at(k) == v);
    CHECK(c.at(k) == v);
  }
  // Another workload (n=1): refused in one line naming the file, nothing stored.
  const auto wrong = run_cli(dir, common + "--workload 'text:" + models +
                                      "/../data/tinystories_validation_head.txt;window=96;n=1' --base " + base);
  CHECK(wrong.rc == 1);
  CHECK(wrong.err.find("kvscope: error: " + base) != std::string::npos);
  CHECK(wrong.err.find("\n") == wrong.err.size() - 1);
  // runs show: the items and the llama.cpp blocks of the last stored run.
  const auto show = run_cli(dir, "runs show 3 --db " + dir.path("runs.sqlite"));
  REQUIRE(show.rc == 0);
  CHECK(show.out.find("replay items") != std::string::npos);
  CHECK(show.out.find("====== Token probability statistics ======") != std::string::npos);
}
