// The run-store commands end to end: kvscope runs / export / merge as a user types them.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "storage/run_store.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;
using Catch::Contains;
using Catch::StartsWith;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `kvscope <args>` through the shell (args are pre-quoted by the caller).
Result kvscope_cli(const TempDir& tmp, const std::string& args, const std::string& env = "") {
  const std::string out = tmp.path("stdout"), err = tmp.path("stderr");
  const std::string cmd = env + " '" KVSCOPE_BIN "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

std::string q(const std::string& s) { return "'" + s + "'"; }

}  // namespace

TEST_CASE("kvscope runs list/show/tag/note/delete", "[storage][cli]") {
  TempDir tmp;
  const std::string db = tmp.path("runs.sqlite");
  {
    RunStore store(db);
    store.add_quantize_run(test::make_report(2, 2, 1, "kivi", "llama-7b"), {});
    store.add_quantize_run(test::make_report(2, 2, 2, "uniform", "llama-7b"), {});
    store.add_quantize_run(test::make_report(2, 2, 3, "kivi", "qwen2-0.5b"), {});
  }
  const std::string D = " --db " + q(db);

  Result r = kvscope_cli(tmp, "runs list" + D);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, StartsWith("run  created"));
  CHECK_THAT(r.out, Contains("qwen2-0.5b") && Contains("uniform"));

  r = kvscope_cli(tmp, "runs list --method kivi --json" + D);
  REQUIRE(r.code == 0);
  const auto listed = nlohmann::json::parse(r.out);
  REQUIRE(listed["rows"].size() == 2);
  CHECK(listed["rows"][0]["run"] == 3);
  CHECK(listed["rows"][1]["run"] == 1);

  REQUIRE(kvscope_cli(tmp, "runs tag 2 paper" + D).code == 0);
  REQUIRE(kvscope_cli(tmp, "runs note 2 " + q("good, keep") + D).code == 0);
  r = kvscope_cli(tmp, "runs list --tag paper --json" + D);
  REQUIRE(nlohmann::json::parse(r.out)["rows"].size() == 1);
  CHECK(nlohmann::json::parse(r.out)["rows"][0]["note"] == "good, keep");

  r = kvscope_cli(tmp, "runs show 2" + D);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Contains("method          uniform") && Contains("tags            paper") &&
                        Contains("bits_per_element") && Contains("layer"));
  r = kvscope_cli(tmp, "runs show 2 --json" + D);
  REQUIRE(r.code == 0);
  const auto shown = nlohmann::json::parse(r.out);
  CHECK(shown["per_head"].size() == 2 * 2 * 2);
  CHECK(shown["policy"]["method"] == "uniform");

  REQUIRE(kvscope_cli(tmp, "runs delete 2" + D).code == 0);
  r = kvscope_cli(tmp, "runs delete 2" + D);
  CHECK(r.code == 1);
  CHECK(r.err == "kvscope: error: " + db + ": no run 2\n");
}

TEST_CASE("kvscope export writes every format, to stdout or atomically to a file", "[storage][cli]") {
  TempDir tmp;
  const std::string db = tmp.path("runs.sqlite");
  {
    RunStore store(db);
    store.add_quantize_run(test::make_report(2, 1, 0, "uniform"), {});
    store.add_quantize_run(test::make_report(2, 1, 0, "kivi"), {});
  }
  const std::string D = " --db " + q(db);
  Result r = kvscope_cli(tmp, "export --run 1,2 --format md --table compare" + D);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, StartsWith("| metric | run_1 | run_2 | delta_2 |\n| --- | ---: | ---: | ---: |\n"));
  CHECK_THAT(r.out, Contains("| method | uniform | kivi |  |"));
  CHECK_THAT(r.out, Contains("| bits_per_element | 2.25 | 2.25 | +0 |"));

  const std::string out = tmp.path("t.tex");
  REQUIRE(kvscope_cli(tmp, "export --run 1 --format tex --table per-layer --out " + q(out) + D).code == 0);
  CHECK_THAT(slurp(out), StartsWith("% kvscope per-layer table; needs \\usepackage{booktabs}\n") &&
                             Contains("\\toprule") && Contains("k\\_nmse"));

  r = kvscope_cli(tmp, "export --run 1,2 --format csv" + D);
  CHECK_THAT(r.out, StartsWith("run,created,model,method,policy,tokens,bits_per_element,"));
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 3);

  r = kvscope_cli(tmp, "export --run 1 --format json --table per-head" + D);
  CHECK(nlohmann::json::parse(r.out)["rows"].size() == 2);

  r = kvscope_cli(tmp, "export --run 1,7 --format csv" + D);
  CHECK(r.code == 1);
  CHECK(r.err == "kvscope: error: " + db + ": no run 7\n");
  r = kvscope_cli(tmp, "export --run 1 --format xlsx" + D);
  CHECK(r.code != 0);
  CHECK_THAT(r.err, Contains("xlsx"));
  r = kvscope_cli(tmp, "export --run 1 --format csv --out " + q(tmp.path("no/such/dir/x.csv")) + D);
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Contains("no/such/dir/x.csv"));
}

TEST_CASE("kvscope merge, the default database and bad databases", "[storage][cli]") {
  TempDir tmp;
  const std::string a = tmp.path("a.sqlite"), b = tmp.path("b.sqlite"), c = tmp.path("c.sqlite");
  RunStore(a).add_quantize_run(test::make_report(1, 1, 0, "kivi"), {});
  RunStore(b).add_quantize_run(test::make_report(1, 1, 0, "uniform"), {});
  Result r = kvscope_cli(tmp, "merge " + q(a) + " " + q(b) + " --into " + q(c));
  REQUIRE(r.code == 0);
  CHECK_THAT(r.err, Contains("2 run(s) added, 0 already there"));
  r = kvscope_cli(tmp, "merge " + q(a) + " --into " + q(c));
  CHECK_THAT(r.err, Contains("0 run(s) added, 1 already there"));
  CHECK(RunStore(c).list_runs().size() == 2);

  // No --db: $XDG_DATA_HOME/kvscope/kvscope.sqlite, created on first use.
  r = kvscope_cli(tmp, "runs list", "XDG_DATA_HOME=" + q(tmp.path("xdg")));
  REQUIRE(r.code == 0);
  CHECK(std::filesystem::exists(tmp.path("xdg/kvscope/kvscope.sqlite")));

  const std::string junk = tmp.path("junk.sqlite");
  std::ofstream(junk) << std::string(1000, 'j');
  r = kvscope_cli(tmp, "runs list --db " + q(junk));
  CHECK(r.code == 1);
  CHECK_THAT(r.err, StartsWith("kvscope: error: " + junk + ": file is not a database"));
}

TEST_CASE("hostile tags and notes are stored and exported verbatim; CSV parses with Python's csv module",
          "[storage][cli]") {
  TempDir tmp;
  const std::string db = tmp.path("runs.sqlite");
  const std::string evil_tag = "x');DROP_TABLE_runs;--\"";  // tags may not contain spaces
  const std::string evil_note = "x'); DROP TABLE runs; -- quote \" comma , newline\nand 'single'";
  {
    RunStore store(db);
    store.add_quantize_run(test::make_report(2, 2, 1, "kivi", "model, \"quoted\""), {});
    store.add_tag(1, evil_tag);
    store.set_note(1, evil_note);
  }
  const std::string D = " --db " + q(db);
  Result r = kvscope_cli(tmp, "runs show 1 --json" + D);
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j.dump().find("x'); DROP TABLE runs; --") != std::string::npos);
  {
    RunStore store(db);  // the table is still there, with its run, tag and note intact
    auto runs = store.list_runs({});
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].note == evil_note);
    CHECK(std::count(runs[0].tags.begin(), runs[0].tags.end(), evil_tag) == 1);
  }
  // CSV through a standard parser: every row has the header's width, the awkward model name
  // comes back intact.
  r = kvscope_cli(tmp, "export --run 1 --format csv --table per-head --out " + q(tmp.path("h.csv")) + D);
  REQUIRE(r.code == 0);
  r = kvscope_cli(tmp, "export --run 1 --format csv --table summary --out " + q(tmp.path("s.csv")) + D);
  REQUIRE(r.code == 0);
  const std::string py =
      "import csv,sys\n"
      "for f in sys.argv[1:]:\n"
      "  rows = list(csv.reader(open(f, newline='')))\n"
      "  assert len(rows) > 1, f\n"
      "  assert all(len(x) == len(rows[0]) for x in rows), f\n"
      "  print(f, len(rows), len(rows[0]))\n"
      "  if f.endswith('s.csv'): print('MODEL' if any('model, \"quoted\"' in c for x in rows for c in x) else 'NOMODEL')\n";
  std::ofstream(tmp.path("check.py")) << py;
  const std::string cmd = "python3 " + q(tmp.path("check.py")) + " " + q(tmp.path("h.csv")) + " " + q(tmp.path("s.csv")) +
                          " >" + q(tmp.path("py.out")) + " 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string out = slurp(tmp.path("py.out"));
  INFO(out);
  // per-head table: one row per (layer, KV head) with K and V side by side, plus the header.
  const size_t head_rows = test::make_report(2, 2, 1, "kivi", "m").per_head.size() / 2;
  CHECK_THAT(out, Contains("h.csv " + std::to_string(head_rows + 1) + " ") && Contains("MODEL"));
  CHECK_THAT(out, !Contains("NOMODEL"));
}
