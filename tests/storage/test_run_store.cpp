// RunStore: schema, migrations, round trips, filters, edits and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <limits>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "core/util/error.h"
#include "core/util/content_hash.h"
#include "storage/run_store.h"
#include "storage/schema.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;
using Catch::Contains;

namespace {

std::string pragma(const std::string& db_path, const std::string& name) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  SQLite::Statement q(db, "PRAGMA " + name);
  q.executeStep();
  return q.getColumn(0).getString();
}

}  // namespace

TEST_CASE("a new store has the current schema, WAL and its application id", "[storage]") {
  TempDir tmp;
  const std::string db = tmp.path("sub/dir/runs.sqlite");  // directories are created
  { RunStore store(db); }
  CHECK(pragma(db, "user_version") == std::to_string(kSchemaVersion));
  CHECK(pragma(db, "journal_mode") == "wal");
  CHECK(pragma(db, "application_id") == std::to_string(kApplicationId));
  for (const char* table : {"models", "dumps", "policies", "runs", "run_tags", "run_summaries", "head_metrics",
                            "attention_metrics", "rd_points", "replay_metrics"}) {
    INFO(table);
    CHECK(test::query_count(db, std::string("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='") + table + "'") == 1);
  }
  RunStore again(db);  // reopening an up-to-date store changes nothing
  CHECK(again.integrity_check() == "ok");
}

TEST_CASE("a version 1 store is migrated forward and keeps its runs", "[storage]") {
  TempDir tmp;
  const std::string db = tmp.path("old.sqlite");
  {
    SQLite::Database raw(db, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    migrate_schema(raw, db, 1);
    raw.exec(
        "INSERT INTO models(id, name) VALUES (1, 'old-model');"
        "INSERT INTO runs(id, created_at, kvscope_version, kind, status, model_id, method, wall_seconds)"
        " VALUES (7, '2025-01-02T03:04:05.000Z', '0.0.9', 'quantize', 'done', 1, 'uniform', 2.5);"
        "INSERT INTO run_summaries(run_id, bits_per_element, k_nmse) VALUES (7, 4.25, 0.001);"
        "INSERT INTO head_metrics VALUES (7, 0, 0, 'k', 0.001, 0.999, 0.0005, 0.1, 4352, 1024, 0);");
    REQUIRE(schema_version_of(raw, db) == 1);
    REQUIRE_FALSE(raw.tableExists("rd_points"));
  }
  RunStore store(db);
  CHECK(pragma(db, "user_version") == std::to_string(kSchemaVersion));
  const StoredRun run = store.load_run(7);
  CHECK(run.report.model_id == "old-model");
  CHECK(run.report.bits_per_element == 4.25);
  CHECK(run.kvscope_version == "0.0.9");
  CHECK(run.uuid.size() == 32);  // migration 2 gave the old run its identity
  REQUIRE(run.report.per_head.size() == 1);
  CHECK(run.report.per_head[0].bits == 4352);
  CHECK(run.rd_points.empty());
  const int64_t id = store.add_quantize_run(test::make_report(1, 1, 0), {});
  CHECK(id == 8);
}

TEST_CASE("a quantize run round-trips through the store", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  QuantizeReport report = test::make_report(3, 2, 1);
  report.per_head[3].nmse = std::numeric_limits<double>::quiet_NaN();  // e.g. an all-zero head
  report.per_head[4].max_abs = std::numeric_limits<double>::infinity();
  report.per_head[5].bits = (uint64_t(1) << 40) + 3;
  RunContext ctx;
  ctx.dump_hash = "fnv1a64:0123456789abcdef";
  ctx.tags = {"paper", "baseline"};
  ctx.note = "first try, with \"quotes\"\nand a newline";
  ctx.rd_points = {{"kivi", 2.25, "k_nmse", 0.0123}, {"kivi", 2.25, "attn_cos_mean", 0.999}};
  ctx.replay_metrics = {{"", "greedy_match_ratio", 0.97}};
  const int64_t id = store.add_quantize_run(report, ctx);

  const StoredRun run = store.load_run(id);
  test::require_same_report(report, run.report);
  CHECK(run.id == id);
  CHECK(run.kind == "quantize");
  CHECK(run.status == "done");
  CHECK(run.kvscope_version == KVSCOPE_VERSION);
  CHECK(run.dump_hash == ctx.dump_hash);
  CHECK(run.policy_hash == hash_text(report.policy_json));
  CHECK(run.tags == std::vector<std::string>{"baseline", "paper"});
  CHECK(run.note == ctx.note);
  CHECK(run.created_at.size() == 24);  // 2026-11-23T10:40:50.123Z
  REQUIRE(run.rd_points.size() == 2);
  CHECK(run.rd_points[1].metric == "attn_cos_mean");
  CHECK(run.rd_points[1].value == 0.999);
  REQUIRE(run.replay_metrics.size() == 1);
  CHECK(run.replay_metrics[0].name == "greedy_match_ratio");
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM head_metrics") == 3 * 2 * 2);
}

TEST_CASE("dumps and policies are stored once per content hash", "[storage]") {
  TempDir tmp;
  const std::string dump = tmp.path("d.safetensors");
  std::ofstream(dump) << "not really a dump, but bytes to hash";
  RunStore store(tmp.path("runs.sqlite"));
  QuantizeReport r = test::make_report(1, 1, 0);
  r.dump_path = dump;
  const int64_t a = store.add_quantize_run(r, {});  // hash computed from the file
  const int64_t b = store.add_quantize_run(r, {});
  CHECK(store.load_run(a).dump_hash == hash_file(dump));
  CHECK(store.load_run(b).dump_hash == hash_file(dump));
  r.policy_json = R"({"method":"uniform"})";
  store.add_quantize_run(r, {});
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM dumps") == 1);
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM policies") == 2);
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM models") == 1);
}

TEST_CASE("FNV-1a 64 matches the published test vectors", "[storage]") {
  // From the FNV reference test suite (Fowler/Noll/Vo).
  CHECK(fnv1a64("") == 0xcbf29ce484222325ull);
  CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(fnv1a64("foobar") == 0x85944171f73967e8ull);
  CHECK(hash_text("a") == "fnv1a64:af63dc4c8601ec8c");
  TempDir tmp;
  const std::string f = tmp.path("f");
  std::ofstream(f) << "foobar";
  CHECK(hash_file(f) == "fnv1a64:85944171f73967e8");
}

TEST_CASE("runs are listed newest first and filtered by model, method, tag, status and time", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  const int64_t a = store.add_quantize_run(test::make_report(1, 1, 1, "kivi", "llama-7b"), {"", "", {"x"}, "", {}, {}});
  const int64_t b = store.add_quantize_run(test::make_report(1, 1, 2, "uniform", "llama-7b"), {"", "", {"x", "y"}, "", {}, {}});
  const int64_t c = store.add_quantize_run(test::make_report(1, 1, 3, "kivi", "qwen2-0.5b"), {});
  auto ids = [&](const RunFilter& f) {
    std::vector<int64_t> out;
    for (const auto& l : store.list_runs(f)) out.push_back(l.id);
    return out;
  };
  CHECK(ids({}) == std::vector<int64_t>{c, b, a});
  CHECK(ids({.model = "llama"}) == std::vector<int64_t>{b, a});
  CHECK(ids({.method = "kivi"}) == std::vector<int64_t>{c, a});
  CHECK(ids({.tag = "y"}) == std::vector<int64_t>{b});
  CHECK(ids({.model = "llama", .method = "kivi", .tag = "x"}) == std::vector<int64_t>{a});
  CHECK(ids({.status = "failed"}).empty());
  CHECK(ids({.limit = 2}) == std::vector<int64_t>{c, b});
  CHECK(ids({.since = "2000-01-01"}).size() == 3);
  CHECK(ids({.since = "2999-01-01T00:00"}).empty());
  CHECK(ids({.since = "1h"}).size() == 3);
  CHECK_THROWS_WITH(ids({.since = "yesterday"}), Contains("--since \"yesterday\""));
  const auto listing = store.list_runs({.tag = "y"});
  REQUIRE(listing.size() == 1);
  CHECK(listing[0].tags == std::vector<std::string>{"x", "y"});
  CHECK(listing[0].model_id == "llama-7b");
  CHECK(listing[0].bits_per_element == test::make_report(1, 1, 2).bits_per_element);
}

TEST_CASE("tags, notes and deletes edit one run", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  const int64_t a = store.add_quantize_run(test::make_report(2, 2, 1), {});
  const int64_t b = store.add_quantize_run(test::make_report(2, 2, 2), {});
  store.add_tag(a, "keep");
  store.add_tag(a, "keep");  // idempotent
  store.set_note(a, "good one");
  CHECK(store.load_run(a).tags == std::vector<std::string>{"keep"});
  CHECK(store.load_run(a).note == "good one");
  store.remove_tag(a, "keep");
  CHECK(store.load_run(a).tags.empty());
  CHECK_THROWS_WITH(store.remove_tag(a, "keep"), Contains("has no tag"));
  CHECK_THROWS_WITH(store.add_tag(a, "two words"), Contains("without spaces"));
  CHECK_THROWS_WITH(store.add_tag(999, "x"), Contains("no run 999"));
  CHECK_THROWS_WITH(store.set_note(999, "x"), Contains("no run 999"));
  store.delete_run(a);
  CHECK_THROWS_WITH(store.load_run(a), Contains("no run"));
  CHECK_THROWS_WITH(store.delete_run(a), Contains("no run"));
  // Cascade: only b's rows are left.
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM head_metrics") == 2 * 2 * 2);
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM attention_metrics WHERE run_id = " + std::to_string(b)) == 4);
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM run_summaries") == 1);
}

TEST_CASE("a replay run stores its identification and replay metrics", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  QuantizeReport identity = test::make_report(2, 1, 0);
  RunContext ctx;
  ctx.workload = "passkey:4096";
  ctx.replay_metrics = {{"depth=0.5", "greedy_match_ratio", 0.9}, {"depth=0.5", "perplexity_delta", 0.12}};
  const int64_t id = store.add_replay_run(identity, ctx);
  const StoredRun run = store.load_run(id);
  CHECK(run.kind == "replay");
  CHECK(run.workload == "passkey:4096");
  CHECK(run.report.method == identity.method);
  CHECK(run.report.per_head.empty());
  REQUIRE(run.replay_metrics.size() == 2);
  CHECK(run.replay_metrics[1].name == "perplexity_delta");
  CHECK(run.replay_metrics[1].value == 0.12);
  CHECK(std::isnan(store.list_runs()[0].bits_per_element));  // no tensor summary for replay
  CHECK(std::isnan(store.list_runs()[0].greedy_match));       // no "steps": nothing to pool by
}

TEST_CASE("listed replay runs pool their slices by scored steps", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  const int64_t q = store.add_quantize_run(test::make_report(2, 1, 0), {});
  RunContext ctx;
  // Slice a: 30 steps, 27 matched (0.9), KL 0.01, 5 bits; slice b: 10 steps, 5 matched (0.5), KL
  // 0.05, 3 bits; slice c has no steps and does not count. Pooled: matched 32 / 40 = 0.8;
  // KL (0.3 + 0.5) / 40 = 0.02; bits (150 + 30) / 40 = 4.5.
  ctx.replay_metrics = {{"a", "steps", 30},          {"a", "greedy_match_ratio", 0.9}, {"a", "next_token_kl", 0.01},
                        {"a", "avg_bits_per_kv_token", 5}, {"b", "steps", 10},          {"b", "greedy_match_ratio", 0.5},
                        {"b", "next_token_kl", 0.05},      {"b", "avg_bits_per_kv_token", 3}, {"c", "greedy_match_ratio", 0}};
  const int64_t r = store.add_replay_run(test::make_report(2, 1, 0), ctx);
  auto listed = store.list_runs();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].id == r);
  CHECK(listed[0].greedy_match == Approx(0.8));
  CHECK(listed[0].next_token_kl == Approx(0.02));
  CHECK(listed[0].kv_bits == Approx(4.5));
  CHECK(listed[1].id == q);
  CHECK(std::isnan(listed[1].greedy_match));
  CHECK(std::isnan(listed[1].kv_bits));
}

TEST_CASE("a failing run leaves nothing behind", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  QuantizeReport r = test::make_report(2, 2, 0);
  r.per_head.back().kind = 'x';  // rejected after the run row and most head rows were inserted
  CHECK_THROWS_WITH(store.add_quantize_run(r, {}), Contains("kind must be k or v"));
  CHECK(store.list_runs().empty());
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM head_metrics") == 0);
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM models") == 0);
}

TEST_CASE("a run that fails inside a longer transaction leaves none of its rows", "[storage]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  QuantizeReport bad = test::make_report(2, 2, 0);
  bad.per_head.back().kind = 'x';
  store.in_transaction([&] {
    store.add_quantize_run(test::make_report(2, 2, 1), {});
    CHECK_THROWS(store.add_quantize_run(bad, {}));  // caught: the outer transaction goes on
    store.add_quantize_run(test::make_report(2, 2, 2), {});
  });
  CHECK(store.list_runs().size() == 2);
  CHECK(test::query_count(store.path(), "SELECT count(*) FROM head_metrics") == 2 * 2 * 2 * 2);
  CHECK_THROWS_WITH(store.in_transaction([&] {
    store.add_quantize_run(test::make_report(2, 2, 3), {});
    throw Error("caller gave up");
  }), Contains("caller gave up"));
  CHECK(store.list_runs().size() == 2);  // the whole outer transaction was rolled back
}

TEST_CASE("bad databases give one clear error naming the file", "[storage]") {
  TempDir tmp;
  SECTION("not a database") {
    const std::string f = tmp.path("notes.sqlite");
    std::ofstream(f) << std::string(4096, 'x');
    CHECK_THROWS_WITH(RunStore(f), Contains(f) && Contains("file is not a database"));
  }
  SECTION("a truncated database") {
    const std::string f = tmp.path("cut.sqlite");
    { RunStore store(f); store.add_quantize_run(test::make_report(4, 4, 0), {}); }
    { SQLite::Database db(f, SQLite::OPEN_READWRITE); db.exec("PRAGMA wal_checkpoint(TRUNCATE)"); }
    std::filesystem::resize_file(f, 100);
    CHECK_THROWS_WITH(RunStore(f).load_run(1), Contains(f));
  }
  SECTION("another program's database") {
    const std::string f = tmp.path("other.sqlite");
    { SQLite::Database db(f, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE); db.exec("CREATE TABLE t(x)"); }
    CHECK_THROWS_WITH(RunStore(f), Contains(f) && Contains("not a kvscope database"));
  }
  SECTION("a schema from the future") {
    const std::string f = tmp.path("future.sqlite");
    { RunStore store(f); }
    { SQLite::Database db(f, SQLite::OPEN_READWRITE); db.exec("PRAGMA user_version = 99"); }
    CHECK_THROWS_WITH(RunStore(f), Contains(f) && Contains("schema version 99 is newer"));
    CHECK_THROWS_WITH(RunStore(f, {.read_only = true}), Contains("schema version 99 is newer"));
  }
  SECTION("a negative schema version (found by fuzz_run_store: it indexed the migrations at -1)") {
    const std::string empty = tmp.path("negative-empty.sqlite");
    { SQLite::Database db(empty, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE); db.exec("PRAGMA user_version = -1"); }
    CHECK_THROWS_WITH(RunStore(empty), Contains(empty) && Contains("not a kvscope database (schema version -1)"));
    const std::string used = tmp.path("negative-used.sqlite");
    { RunStore store(used); }
    { SQLite::Database db(used, SQLite::OPEN_READWRITE); db.exec("PRAGMA user_version = -2147483648"); }
    CHECK_THROWS_WITH(RunStore(used, {.read_only = true}), Contains(used) && Contains("schema version -2147483648"));
  }
  SECTION("a location that cannot hold a file") {
    const std::string blocker = tmp.path("plain-file");
    std::ofstream(blocker) << "x";
    const std::string f = blocker + "/runs.sqlite";  // its "directory" is a regular file
    CHECK_THROWS_WITH(RunStore(f), Contains(f) && Contains("cannot create directory"));
    CHECK_THROWS_WITH(RunStore("/proc/kvscope-test.sqlite"), Contains("/proc/kvscope-test.sqlite"));
  }
  SECTION("a store opened read-only refuses writes, and must exist") {
    const std::string f = tmp.path("ro.sqlite");
    { RunStore store(f); }
    RunStore ro(f, {.read_only = true});
    CHECK(ro.list_runs().empty());
    CHECK_THROWS_WITH(ro.add_quantize_run(test::make_report(1, 1, 0), {}), Contains(f) && Contains("read-only"));
    CHECK_THROWS_WITH(RunStore(tmp.path("missing.sqlite"), {.read_only = true}), Contains("no such database"));
  }
  SECTION("a database locked by another writer") {
    const std::string f = tmp.path("locked.sqlite");
    { RunStore store(f); }
    SQLite::Database holder(f, SQLite::OPEN_READWRITE);
    holder.exec("BEGIN EXCLUSIVE");
    RunStore store(f, {.busy_timeout_ms = 50});
    CHECK(store.list_runs().empty());  // WAL: reading still works
    CHECK_THROWS_WITH(store.add_quantize_run(test::make_report(1, 1, 0), {}),
                      Contains(f) && Contains("database is locked") && Contains("BEGIN IMMEDIATE"));
    holder.exec("ROLLBACK");
    CHECK(store.add_quantize_run(test::make_report(1, 1, 0), {}) == 1);
  }
}

TEST_CASE("the default database follows XDG_DATA_HOME, then HOME", "[storage]") {
  const char* old_xdg = std::getenv("XDG_DATA_HOME");
  const std::string saved = old_xdg ? old_xdg : "";
  setenv("XDG_DATA_HOME", "/xdg/data", 1);
  CHECK(default_db_path() == "/xdg/data/kvscope/kvscope.sqlite");
  setenv("XDG_DATA_HOME", "relative/ignored", 1);
  CHECK(default_db_path() == std::string(std::getenv("HOME")) + "/.local/share/kvscope/kvscope.sqlite");
  unsetenv("XDG_DATA_HOME");
  CHECK(default_db_path() == std::string(std::getenv("HOME")) + "/.local/share/kvscope/kvscope.sqlite");
  if (old_xdg) setenv("XDG_DATA_HOME", saved.c_str(), 1);
}
