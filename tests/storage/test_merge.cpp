// merge_run_stores: completeness, dedup of dumps/policies/models, idempotence, untouched sources.
#include <catch2/catch.hpp>

#include <fstream>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "core/util/error.h"
#include "storage/merge.h"
#include "storage/run_store.h"
#include "storage/schema.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;
using Catch::Contains;

namespace {

// Two runs on the same dump; `method` decides the policy.
void fill(const std::string& path, const std::string& method, int seed) {
  RunStore store(path);
  for (int i = 0; i < 2; ++i) {
    RunContext ctx;
    ctx.dump_hash = "fnv1a64:00000000000000aa";  // the same dump in every shard
    ctx.tags = {"shard-" + method};
    ctx.rd_points = {{method, 2.0 + i, "k_nmse", 0.1 * (seed + i)}};
    store.add_quantize_run(test::make_report(3, 2, seed + i, method), ctx);
  }
}

}  // namespace

TEST_CASE("merge keeps every run and shares identical dumps and policies", "[storage][merge]") {
  TempDir tmp;
  const std::string a = tmp.path("a.sqlite"), b = tmp.path("b.sqlite"), c = tmp.path("c.sqlite");
  fill(a, "kivi", 10);
  fill(b, "uniform", 20);

  MergeStats s = merge_run_stores({a, b}, c);
  CHECK(s.runs_seen == 4);
  CHECK(s.runs_added == 4);
  CHECK(test::query_count(c, "SELECT count(*) FROM runs") == 4);
  CHECK(test::query_count(c, "SELECT count(*) FROM dumps") == 1);
  CHECK(test::query_count(c, "SELECT count(*) FROM policies") == 2);
  CHECK(test::query_count(c, "SELECT count(*) FROM models") == 1);
  CHECK(test::query_count(c, "SELECT count(*) FROM head_metrics") == 4 * 3 * 2 * 2);

  // Each merged run is the source run, row for row, with its uuid, time and an origin.
  RunStore source(a, {.read_only = true});
  RunStore target(c, {.read_only = true});
  for (const auto& l : target.list_runs({.method = "kivi"})) {
    const StoredRun merged = target.load_run(l.id);
    const std::string origin_suffix = merged.origin.substr(merged.origin.rfind('#') + 1);
    CHECK(merged.origin.find("a.sqlite#") != std::string::npos);
    const StoredRun original = source.load_run(std::stoll(origin_suffix));
    CHECK(merged.uuid == original.uuid);
    CHECK(merged.created_at == original.created_at);
    CHECK(merged.tags == original.tags);
    CHECK(merged.report.k_nmse == original.report.k_nmse);
    CHECK(merged.report.per_head.size() == original.report.per_head.size());
    CHECK(merged.report.per_head.back().nmse == original.report.per_head.back().nmse);
    REQUIRE(merged.rd_points.size() == 1);
    CHECK(merged.rd_points[0].value == original.rd_points[0].value);
  }

  SECTION("merging the same stores again adds nothing") {
    s = merge_run_stores({a, b, a}, c);
    CHECK(s.runs_added == 0);
    CHECK(s.runs_skipped == 6);
    CHECK(test::query_count(c, "SELECT count(*) FROM runs") == 4);
  }
  SECTION("merging back into a source adds only the other runs") {
    const std::string a_copy = tmp.path("a2.sqlite");
    merge_run_stores({a}, a_copy);
    s = merge_run_stores({c}, a_copy);
    CHECK(s.runs_added == 2);
    CHECK(test::query_count(a_copy, "SELECT count(*) FROM runs") == 4);
  }
  SECTION("sources are not modified") {
    CHECK(test::query_count(a, "SELECT count(*) FROM runs") == 2);
    CHECK(test::query_count(b, "SELECT count(*) FROM runs") == 2);
  }
}

TEST_CASE("merge upgrades an old source in a copy and leaves the file alone", "[storage][merge]") {
  TempDir tmp;
  const std::string old_db = tmp.path("v1.sqlite"), into = tmp.path("into.sqlite");
  {
    SQLite::Database raw(old_db, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    migrate_schema(raw, old_db, 1);
    raw.exec(
        "INSERT INTO runs(id, created_at, kvscope_version, kind, status, method)"
        " VALUES (1, '2025-05-05T00:00:00.000Z', '0.0.9', 'quantize', 'done', 'uniform');"
        "INSERT INTO run_summaries(run_id, bits_per_element) VALUES (1, 4.0);");
  }
  const MergeStats s = merge_run_stores({old_db}, into);
  CHECK(s.runs_added == 1);
  RunStore target(into);
  const StoredRun run = target.load_run(target.list_runs().at(0).id);
  CHECK(run.created_at == "2025-05-05T00:00:00.000Z");
  CHECK(run.report.bits_per_element == 4.0);
  SQLite::Database check(old_db, SQLite::OPEN_READONLY);
  CHECK(schema_version_of(check, old_db) == 1);
}

TEST_CASE("a merge that fails adds nothing", "[storage][merge]") {
  TempDir tmp;
  const std::string a = tmp.path("a.sqlite"), bad = tmp.path("bad.sqlite"), c = tmp.path("c.sqlite");
  fill(a, "kivi", 1);
  std::ofstream(bad) << std::string(2048, 'z');
  CHECK_THROWS_WITH(merge_run_stores({a, bad}, c), Contains(bad) && Contains("not a database"));
  CHECK(RunStore(c).list_runs().empty());
  CHECK_THROWS_WITH(merge_run_stores({tmp.path("missing.sqlite")}, c), Contains("missing.sqlite: no such database"));
  CHECK_THROWS_WITH(merge_run_stores({a}, a), Contains("is also the --into database"));
}
