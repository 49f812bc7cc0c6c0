// Per-item rows and KLD quantiles of replay runs (schema 4): stored with the run, loaded back,
// kept by merge, exported to JSON, and a version 3 store gains the tables.
#include <catch2/catch.hpp>

#include <SQLiteCpp/SQLiteCpp.h>

#include "storage/export.h"
#include "storage/merge.h"
#include "storage/run_store.h"
#include "storage/schema.h"
#include "tests/storage/store_fixtures.h"
#include "test_util.h"

using namespace kvscope;

namespace {

RunContext replay_context() {
  RunContext ctx;
  ctx.workload = "text:alice.txt";
  ctx.replay_metrics = {{"text:alice.txt", "next_token_kl", 0.004}, {"text:alice.txt", "steps", 510}};
  ctx.replay_items = {{"text:alice.txt", 1, 257, 255, 0.41, 0.42, 0.0039, 0.03, 0.2, -1e-4, 0.95, 12.5, 12.4},
                      {"text:alice.txt", 2, 257, 255, 0.39, 0.40, 0.0041, 0.05, 0.4, 2e-4, 0.93, 13.5, 13.1}};
  for (int k = 0; k <= 4; ++k) ctx.kld_quantiles.push_back({"text:alice.txt", k / 4.0, 1e-5 * (1 << (3 * k))});
  return ctx;
}

}  // namespace

TEST_CASE("replay items and KLD quantiles round-trip through the store, merge and JSON", "[storage]") {
  TempDir tmp;
  const std::string a = tmp.path("a.sqlite"), into = tmp.path("into.sqlite");
  int64_t id = 0;
  {
    RunStore s(a);
    id = s.add_replay_run(test::make_report(2, 1, 0), replay_context());
    const StoredRun run = s.load_run(id);
    REQUIRE(run.replay_items.size() == 2);
    CHECK(run.replay_items[1].item == 2);
    CHECK(run.replay_items[1].prompt_tokens == 257);
    CHECK(run.replay_items[1].kld_p99 == 0.05);
    CHECK(run.replay_items[0].ppl_ref == 12.4);
    REQUIRE(run.kld_quantiles.size() == 5);
    CHECK(run.kld_quantiles[2].fraction == 0.5);
    CHECK(run.kld_quantiles[4].kld == 1e-5 * 4096);
    const std::string json = run_to_json(run);
    CHECK(json.find("\"replay_items\"") != std::string::npos);
    CHECK(json.find("\"kld_quantiles\"") != std::string::npos);
    s.delete_run(id);  // cascades
    CHECK(test::query_count(a, "SELECT count(*) FROM replay_items") == 0);
    CHECK(test::query_count(a, "SELECT count(*) FROM replay_kld_quantiles") == 0);
    id = s.add_replay_run(test::make_report(2, 1, 0), replay_context());
  }
  merge_run_stores({a}, into);
  RunStore m(into);
  const auto listed = m.list_runs();
  REQUIRE(listed.size() == 1);
  const StoredRun merged = m.load_run(listed[0].id);
  REQUIRE(merged.replay_items.size() == 2);
  CHECK(merged.replay_items[0].score == 0.41);
  CHECK(merged.kld_quantiles.size() == 5);
}

TEST_CASE("a version 3 store gains the replay item tables", "[storage]") {
  TempDir tmp;
  const std::string db = tmp.path("v3.sqlite");
  {
    SQLite::Database raw(db, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    migrate_schema(raw, db, 3);
  }
  CHECK(test::query_count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'replay_items'") == 0);
  RunStore store(db);
  CHECK(test::query_count(db, "PRAGMA user_version") == kSchemaVersion);
  CHECK(test::query_count(db, "SELECT count(*) FROM sqlite_master WHERE name IN ('replay_items', 'replay_kld_quantiles')") == 2);
  store.add_replay_run(test::make_report(2, 1, 0), replay_context());
  CHECK(store.integrity_check() == "ok");
}
