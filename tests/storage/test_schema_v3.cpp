// Schema 3: runs.cell_hash (sweep resume) and the two QuantizeReport fields kept since then;
// a version 2 store migrates, keeps its runs, and merge carries the new columns.
#include <catch2/catch.hpp>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "storage/merge.h"
#include "storage/run_store.h"
#include "storage/schema.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;

namespace {

// A version 2 file as kvscope 0.1 wrote it, with one run and one rd point.
void make_v2_store(const std::string& path) {
  SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  migrate_schema(raw, path, 2);
  raw.exec(
      "INSERT INTO models(id, name) VALUES (1, 'old-model');"
      "INSERT INTO runs(id, created_at, kvscope_version, kind, status, model_id, method, wall_seconds, uuid)"
      " VALUES (3, '2026-01-02T03:04:05.000Z', '0.1.0', 'quantize', 'done', 1, 'watersic', 2.5,"
      "         '0123456789abcdef0123456789abcdef');"
      "INSERT INTO run_summaries(run_id, bits_per_element, k_nmse) VALUES (3, 2.125, 0.01);"
      "INSERT INTO rd_points(run_id, method, rate, metric, value) VALUES (3, 'watersic', 2.125, 'k_nmse', 0.01);");
  REQUIRE(schema_version_of(raw, path) == 2);
}

}  // namespace

TEST_CASE("a version 2 store migrates to 3 (and on to the current version) and keeps its runs", "[storage]") {
  REQUIRE(kSchemaVersion >= 3);
  TempDir tmp;
  const std::string db = tmp.path("v2.sqlite");
  make_v2_store(db);
  RunStore store(db);
  CHECK(test::query_count(db, "PRAGMA user_version") == kSchemaVersion);
  CHECK(test::query_count(db, "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'cell_hash'") == 1);
  CHECK(test::query_count(db, "SELECT count(*) FROM pragma_table_info('run_summaries')"
                     " WHERE name IN ('fixed_width_bits_per_element', 'calibration_seconds')") == 2);
  CHECK(test::query_count(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'runs_cell'") == 1);
  const StoredRun old = store.load_run(3);
  CHECK(old.uuid == "0123456789abcdef0123456789abcdef");
  CHECK(old.report.bits_per_element == 2.125);
  CHECK(old.cell_hash.empty());
  CHECK(old.report.fixed_width_bits_per_element == 0);  // NULL in an old run reads as "not measured"
  CHECK(old.report.calibration_seconds == 0);
  REQUIRE(old.rd_points.size() == 1);
  CHECK(store.done_cell_hashes().empty());
  CHECK(store.integrity_check() == "ok");
}

TEST_CASE("cell hashes and the new summary fields round-trip, merge and drive resume", "[storage]") {
  TempDir tmp;
  const std::string a = tmp.path("a.sqlite"), into = tmp.path("into.sqlite"), v2 = tmp.path("v2.sqlite");
  QuantizeReport r = test::make_report(2, 2, 1, "watersic");
  r.fixed_width_bits_per_element = 2.75;
  r.calibration_seconds = 0.375;
  {
    RunStore s(a);
    RunContext ctx;
    ctx.cell_hash = "fnv1a64:00000000000000aa";
    const int64_t id = s.add_quantize_run(r, ctx);
    s.add_quantize_run(test::make_report(2, 2, 2), {});  // no cell
    RunContext replay;
    replay.cell_hash = "fnv1a64:00000000000000bb";
    replay.replay_metrics = {{"text:x", "next_token_kl", 0.5}};
    s.add_replay_run(test::make_report(2, 2, 3), replay);
    const StoredRun back = s.load_run(id);
    CHECK(back.cell_hash == "fnv1a64:00000000000000aa");
    CHECK(back.report.fixed_width_bits_per_element == 2.75);
    CHECK(back.report.calibration_seconds == 0.375);
    CHECK(s.has_done_cell("fnv1a64:00000000000000aa"));
    CHECK(s.has_done_cell("fnv1a64:00000000000000bb"));
    CHECK_FALSE(s.has_done_cell("fnv1a64:00000000000000cc"));
    // Only runs with status 'done' count as finished cells.
    SQLite::Database raw(a, SQLite::OPEN_READWRITE);
    raw.exec("UPDATE runs SET status = 'failed' WHERE cell_hash = 'fnv1a64:00000000000000bb'");
    CHECK_FALSE(s.has_done_cell("fnv1a64:00000000000000bb"));
    CHECK(s.done_cell_hashes() == std::vector<std::string>{"fnv1a64:00000000000000aa"});
  }
  make_v2_store(v2);
  const MergeStats st = merge_run_stores({a, v2}, into);
  CHECK(st.runs_added == 4);
  RunStore target(into);
  CHECK(target.has_done_cell("fnv1a64:00000000000000aa"));
  CHECK(test::query_count(into, "SELECT count(*) FROM runs WHERE cell_hash = 'fnv1a64:00000000000000bb' AND status = 'failed'") == 1);
  CHECK(test::query_count(into, "SELECT count(*) FROM runs WHERE cell_hash IS NULL") == 2);
  CHECK(test::query_count(into, "SELECT count(*) FROM run_summaries WHERE fixed_width_bits_per_element = 2.75"
                       " AND calibration_seconds = 0.375") == 1);
}
