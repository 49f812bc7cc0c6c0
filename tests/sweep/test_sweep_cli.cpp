// `kvscope sweep` and `kvscope compare-cells` end to end, as separate processes: resume after
// SIGKILL, SIGTERM, shards + merge, --jobs, failing cells, and a comparison that can fail.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <regex>
#include <thread>

#include "core/util/parallel.h"
#include "storage/run_store.h"
#include "test_util.h"
#include "tests/sweep/sweep_fixtures.h"

using namespace kvscope;
using namespace kvscope::test;
using Catch::Contains;

namespace {

constexpr int kCells = 18;  // 2 dumps x 6 variants + 1 model x 1 workload x 6 variants

// The study folder: two small synthetic dumps, a text for replay and the spec. The replay model is
// large enough (hidden 256, vocab 32000) for OpenBLAS to split its products over threads.
struct Study {
  TempDir tmp;
  std::string spec;
  Study() {
    write_synth_dump(tmp.path("a.safetensors"), 11, 160);
    write_synth_dump(tmp.path("b.safetensors"), 12, 160);
    write_file(tmp.path("story.txt"),
               "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
               "One day she saw a big red ball in the park and ran to get it.\n");
    spec = tmp.path("study.json");
    write_file(spec, R"({"name": "rd-test", "dumps": ["a.safetensors", "b.safetensors"],
      "models": [")" + models_dir() + R"(/tinystories-qwen2-4L"], "workloads": ["text:story.txt;window=24;n=1"],
      "methods": [{"preset": "uniform-4", "bits": [2, 4, 8]}, {"preset": "kivi-2", "bits": [2, 4]}, {"preset": "fp16"}],
      "attn_queries": 64, "replay": {"max_tokens": 6}})");
  }
  std::string db(const std::string& name) const { return tmp.path(name); }
  CliResult sweep(const std::string& db, const std::string& extra = "") const {
    return kvscope_cli(tmp, "sweep --spec " + q(spec) + " --db " + q(db) + " " + extra);
  }
  CliResult compare(const std::string& a, const std::string& b, const std::string& extra = "") const {
    return kvscope_cli(tmp, "compare-cells " + q(a) + " " + q(b) + " " + extra);
  }
};

// Every stored run is whole: a quantize run has all its head and attention rows, a replay run its
// metrics; and no cell is stored twice.
void check_whole_runs(const std::string& db) {
  CHECK(sql_count(db, "SELECT count(*) FROM runs WHERE kind = 'quantize' AND"
                      " ((SELECT count(*) FROM head_metrics h WHERE h.run_id = runs.id) != 8 OR"
                      "  (SELECT count(*) FROM attention_metrics a WHERE a.run_id = runs.id) != 4 OR"
                      "  (SELECT count(*) FROM run_summaries s WHERE s.run_id = runs.id) != 1)") == 0);
  CHECK(sql_count(db, "SELECT count(*) FROM runs WHERE kind = 'replay' AND"
                      " ((SELECT count(*) FROM replay_metrics m WHERE m.run_id = runs.id) != 19 + 38 OR"  // + KL statistics
                      "  (SELECT count(*) FROM replay_kld_quantiles q WHERE q.run_id = runs.id) != 101 OR"
                      "  (SELECT count(*) FROM replay_items i WHERE i.run_id = runs.id) != 1)") == 0);
  CHECK(sql_count(db, "SELECT count(*) FROM runs") == sql_count(db, "SELECT count(DISTINCT cell_hash) FROM runs"));
  CHECK(sql_count(db, "SELECT count(*) FROM runs WHERE status != 'done' OR cell_hash IS NULL") == 0);
  CHECK(sql_count(db, "SELECT count(*) FROM runs r WHERE NOT EXISTS"
                      " (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag = 'sweep:rd-test')") == 0);
}

// Waits until the child has stored at least `n` runs (it must still be running), then signals it.
int interrupt_after(const std::string& db, pid_t child, int n, int sig, const std::string& log) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  for (;;) {
    INFO(slurp(log));
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    REQUIRE(waitpid(child, &status, WNOHANG) == 0);  // finished (or failed) before we could interrupt it
    std::error_code ec;
    if (std::filesystem::exists(db, ec)) {
      try {
        if (sql_count(db, "SELECT count(*) FROM runs") >= n) break;
      } catch (const std::exception&) {
        // the schema is still being created
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(child, sig);
  REQUIRE(waitpid(child, &status, 0) == child);
  if (WIFSIGNALED(status)) return 1000 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("a sweep stores each cell once, lists them, and resumes after SIGKILL to the same cells", "[sweep][process]") {
  Study st;
  const std::string ref = st.db("ref.sqlite");

  // --list before anything ran: every cell pending, and the store is not created.
  CliResult r = st.sweep(ref, "--list");
  REQUIRE(r.code == 0);
  CHECK_FALSE(std::filesystem::exists(ref));
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == kCells + 1);
  CHECK_THAT(r.out, Contains("index\tshard\thash\tkind\ttarget\tpolicy\tstatus\n"));
  CHECK_THAT(r.out, Contains("\t0\tfnv1a64:") && Contains("\tquantize\ta.safetensors\tuniform-4@2b\tpending\n") &&
                        Contains("\treplay\t") && Contains("kivi-2@4b"));

  // The uninterrupted reference run.
  r = st.sweep(ref);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(sql_count(ref, "SELECT count(*) FROM runs") == kCells);
  check_whole_runs(ref);
  CHECK_THAT(r.err, Contains("[18/18]") && Contains("ETA 0:00") && Contains("skipped 0, failed 0"));
  CHECK(std::regex_search(r.err, std::regex(R"(\[1/18\] cell 0 uniform-4@2b a\.safetensors \([0-9.]+ s\) \| skipped 0, failed 0 \| elapsed \d+:\d\d, ETA \d+:\d\d)")));
  // The bits were applied: uniform per-token groups of 32 channels (head_dim 32) cost b bits per
  // code plus an fp16 scale and an fp16 minimum per 32 elements, so b + 1 bits per element.
  for (int bits : {2, 4, 8})
    CHECK(sql_count(ref, "SELECT count(*) FROM runs r JOIN run_summaries s ON s.run_id = r.id WHERE r.policy_name = 'uniform-4@" +
                             std::to_string(bits) + "b' AND s.bits_per_element = " + std::to_string(bits + 1)) == 2);

  // Rerun: everything is skipped, nothing is added.
  r = st.sweep(ref);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.err, Contains("18 already in") && Contains("0 to run"));
  CHECK(sql_count(ref, "SELECT count(*) FROM runs") == kCells);
  r = st.sweep(ref, "--list --shard 1/4");
  REQUIRE(r.code == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 5 + 1);  // cells 1, 5, 9, 13, 17
  CHECK_THAT(r.out, Contains("\n1\t1\t") && Contains("\n17\t1\t"));
  CHECK(std::count(r.out.begin(), r.out.end(), '\t') == 6 * 6);
  CHECK_THAT(r.out, !Contains("pending"));

  // Killed (SIGKILL, mostly while a run is in its write transaction), then rerun.
  const std::string resumed = st.db("resumed.sqlite");
  const pid_t child = start_kvscope({"sweep", "--spec", st.spec, "--db", resumed}, st.db("child.log"), "150");
  CHECK(interrupt_after(resumed, child, 4, SIGKILL, st.db("child.log")) == 1000 + SIGKILL);
  const int64_t before = sql_count(resumed, "SELECT count(*) FROM runs");
  CHECK(before >= 4);
  CHECK(before < kCells);
  check_whole_runs(resumed);
  r = st.sweep(resumed);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.err, Contains(std::to_string(before) + " already in"));
  check_whole_runs(resumed);
  CHECK(sql_count(resumed, "SELECT count(*) FROM runs") == kCells);
  r = st.compare(ref, resumed);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("18 cells identical"));
}

TEST_CASE("4 shards merged and --jobs 2 give the cells of one plain run", "[sweep][process]") {
  Study st;
  const std::string ref = st.db("ref.sqlite");
  REQUIRE(st.sweep(ref).code == 0);

  std::string shard_dbs;
  for (int i = 0; i < 4; ++i) {
    const std::string db = st.db("shard" + std::to_string(i) + ".sqlite");
    const CliResult r = st.sweep(db, "--shard " + std::to_string(i) + "/4");
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(sql_count(db, "SELECT count(*) FROM runs") == (i < 2 ? 5 : 4));
    shard_dbs += " " + q(db);
  }
  const std::string merged = st.db("merged.sqlite");
  REQUIRE(kvscope_cli(st.tmp, "merge" + shard_dbs + " --into " + q(merged)).code == 0);
  check_whole_runs(merged);
  CliResult r = st.compare(ref, merged);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out == "18 cells identical\n");

  const std::string jobs2 = st.db("jobs2.sqlite");
  r = st.sweep(jobs2, "--jobs 2");
  INFO(r.err);
  REQUIRE(r.code == 0);
  // Each job gets cores/jobs compute threads: derived from this machine's CPUs (the child
  // process inherits the test's affinity), not assumed to be a 2-core box.
  const int threads = std::max(1, available_cpus() / 2);
  CHECK_THAT(r.err, Contains("2 jobs x " + std::to_string(threads) + (threads == 1 ? " thread)" : " threads)")));
  r = st.compare(ref, jobs2);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out == "18 cells identical\n");
}

TEST_CASE("compare-cells reports changed, missing, duplicated and timing-only differences correctly", "[sweep][process]") {
  Study st;
  const std::string ref = st.db("ref.sqlite"), copy = st.db("copy.sqlite");
  REQUIRE(st.sweep(ref).code == 0);
  REQUIRE(kvscope_cli(st.tmp, "merge " + q(ref) + " --into " + q(copy)).code == 0);
  CHECK(st.compare(ref, copy).code == 0);

  auto exec = [&](const std::string& sql) {
    SQLite::Database db(copy, SQLite::OPEN_READWRITE);
    db.exec(sql);
  };
  // Timing metrics are not results.
  exec("UPDATE runs SET wall_seconds = wall_seconds + 1;"
       "UPDATE run_summaries SET calibration_seconds = 5;"
       "UPDATE replay_metrics SET value = value * 2 WHERE name IN ('decode_tokens_per_s', 'prefill_latency_ms');");
  CliResult r = st.compare(ref, copy);
  CHECK(r.code == 0);
  CHECK(r.out == "18 cells identical\n");

  // One summary value off by one part in 1e9: exact comparison fails, --rel-tol 1e-6 passes.
  exec("UPDATE run_summaries SET k_nmse = k_nmse * (1 + 1e-9) WHERE run_id = (SELECT min(id) FROM runs WHERE kind = 'quantize')");
  r = st.compare(ref, copy);
  CHECK(r.code == 1);
  CHECK_THAT(r.out, Contains(": k_nmse: ") && Contains("1 of 18 cells differ\n"));
  r = st.compare(ref, copy, "--rel-tol 1e-6");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Contains("18 cells identical"));

  // A replay result and a per-head metric in two other cells.
  exec("UPDATE replay_metrics SET value = value + 0.5 WHERE name = 'next_token_kl' AND run_id = (SELECT max(id) FROM runs)");
  exec("UPDATE head_metrics SET bits = bits + 1 WHERE layer = 1 AND head = 0 AND kind = 'v' AND run_id = (SELECT max(id) FROM runs WHERE kind = 'quantize')");
  r = st.compare(ref, copy);
  CHECK(r.code == 1);
  CHECK_THAT(r.out, Contains("next_token_kl: ") && Contains("head L1 H0 v bits: ") && Contains("3 of 18 cells differ\n"));

  // A missing cell, and a cell stored twice.
  const std::string fresh = st.db("fresh.sqlite");
  REQUIRE(kvscope_cli(st.tmp, "merge " + q(ref) + " --into " + q(fresh)).code == 0);
  {
    RunStore s(fresh);
    StoredRun twice = s.load_run(s.list_runs().front().id);
    twice.uuid = "00000000000000000000000000000001";
    REQUIRE(s.import_run(twice, "test"));
    s.delete_run(s.list_runs().back().id);
  }
  r = st.compare(ref, fresh);
  CHECK(r.code == 1);
  CHECK_THAT(r.out, Contains("stored 1 time(s) in " + ref + ", 2 time(s) in " + fresh) &&
                        Contains("stored 1 time(s) in " + ref + ", 0 time(s) in " + fresh) && Contains("2 of 18 cells differ\n"));
}

TEST_CASE("SIGTERM and SIGINT stop a sweep with 143 and 130 and leave only whole runs", "[sweep][process]") {
  Study st;
  for (int sig : {SIGTERM, SIGINT}) {
    INFO(sig);
    const std::string db = st.db("sig" + std::to_string(sig) + ".sqlite");
    const std::string log = st.db("sig.log");
    const pid_t child = start_kvscope({"sweep", "--spec", st.spec, "--db", db, "--jobs", "2"}, log, "150");
    CHECK(interrupt_after(db, child, 2, sig, log) == 128 + sig);
    CHECK_THAT(slurp(log), Contains(sig == SIGTERM ? "interrupted by SIGTERM" : "interrupted by SIGINT"));
    check_whole_runs(db);
    const int64_t n = sql_count(db, "SELECT count(*) FROM runs");
    CHECK(n >= 2);
    CHECK(n < kCells);
  }
}

TEST_CASE("a failing cell is reported and not stored; the others are, and the exit code is 1", "[sweep][process]") {
  TempDir tmp;
  write_synth_dump(tmp.path("a.safetensors"), 5, 128);
  write_file(tmp.path("story.txt"), "Once upon a time, there was a little girl named Lily. She loved to play outside.\n");
  const std::string spec = tmp.path("w.json");
  // Replay refuses watersic without a calibration mode (the key Hessian comes from calibration queries);
  // quantize runs it (at two rates, so --jobs 2 runs them side by side).
  write_file(spec, R"({"name": "ws", "dumps": ["a.safetensors"], "models": [")" + models_dir() +
                       R"(/stories260K"], "workloads": ["text:story.txt;window=16;n=1"],
                       "methods": [{"preset": "watersic-2", "rates": [1, 2]}]})");
  for (const char* jobs : {"1", "2"}) {
    const std::string db = tmp.path(std::string("ws") + jobs + ".sqlite");
    CliResult r = kvscope_cli(tmp, "sweep --spec " + q(spec) + " --db " + q(db) + " --jobs " + jobs);
    INFO(r.err);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Contains("cell 2 watersic-2@1r") && Contains("failed: ") &&
                          Contains("$.calibration.mode: method watersic needs \"text\" or \"online\" in replay") &&
                          Contains("2 run, 0 already done, 2 failed") && Contains("error: sweep ws: 2 of 4 cells failed"));
    CHECK(sql_count(db, "SELECT count(*) FROM runs") == 2);
    CHECK(sql_count(db, "SELECT count(*) FROM runs r JOIN run_summaries s ON s.run_id = r.id"
                        " WHERE r.method = 'watersic' AND s.fixed_width_bits_per_element > 0") == 2);
    // A rerun retries only the failed cells.
    r = kvscope_cli(tmp, "sweep --spec " + q(spec) + " --db " + q(db));
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Contains("2 already in") && Contains("0 run, 2 already done, 2 failed"));
  }
  const CliResult r = kvscope_cli(tmp, "compare-cells " + q(tmp.path("ws1.sqlite")) + " " + q(tmp.path("ws2.sqlite")));
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out == "2 cells identical\n");
}

TEST_CASE("bad --shard, --jobs and spec files give one error line and exit 1", "[sweep][process]") {
  TempDir tmp;
  write_synth_dump(tmp.path("a.safetensors"), 5, 32);
  const std::string spec = tmp.path("s.json");
  write_file(spec, R"({"name": "s", "dumps": ["a.safetensors"], "methods": [{"preset": "uniform-4", "bits": [2]}]})");
  const std::string base = "sweep --spec " + q(spec) + " --db " + q(tmp.path("db.sqlite"));
  struct Case {
    std::string args, expect;
  };
  for (const Case& c : std::vector<Case>{
           {base + " --shard 4/4", "kvscope: error: --shard: '4/4' must be I/N with 0 <= I < N (e.g. 0/4)\n"},
           {base + " --shard 1", "kvscope: error: --shard: '1' must be I/N"},
           {base + " --jobs 0", "kvscope: error: --jobs: must be at least 1, got 0\n"},
           {"sweep --spec " + q(tmp.path("none.json")), "kvscope: error: " + tmp.path("none.json") + ": cannot open sweep spec"},
       }) {
    const CliResult r = kvscope_cli(tmp, c.args);
    INFO(c.args);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::StartsWith(c.expect));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  CHECK_FALSE(std::filesystem::exists(tmp.path("db.sqlite")));
  // compare-cells on stores without any sweep cell fails too (most likely the wrong files).
  { RunStore a(tmp.path("a.sqlite")), b(tmp.path("b.sqlite")); }
  const CliResult r = kvscope_cli(tmp, "compare-cells " + q(tmp.path("a.sqlite")) + " " + q(tmp.path("b.sqlite")));
  CHECK(r.code == 1);
  CHECK(r.out == "0 cells identical\n");
  CHECK_THAT(r.err, Contains("neither store holds any sweep cells"));
}
