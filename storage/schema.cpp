#include "storage/schema.h"

#include <sqlite3.h>

#include <fmt/format.h>

#include "core/util/error.h"
#include "storage/sql.h"

namespace kvscope {
namespace {

// migrations[i] takes user_version i -> i + 1.
const char* const kMigrations[] = {
    // 0 -> 1: models, dumps, policies, runs with their summary, per-head and attention metrics, tags.
    R"sql(
CREATE TABLE models (
  id   INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE
);
CREATE TABLE dumps (
  id           INTEGER PRIMARY KEY,
  content_hash TEXT UNIQUE,              -- "fnv1a64:<16 hex>" of the file bytes; NULL when unknown
  path         TEXT NOT NULL,            -- where it was first seen
  model_id     INTEGER REFERENCES models(id),
  layers INTEGER NOT NULL, kv_heads INTEGER NOT NULL, q_heads INTEGER NOT NULL,
  head_dim INTEGER NOT NULL, tokens INTEGER NOT NULL
);
CREATE TABLE policies (
  id   INTEGER PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,             -- "fnv1a64:<16 hex>" of json
  json TEXT NOT NULL                     -- canonical JSON (sorted keys, no whitespace)
);
CREATE TABLE runs (
  id              INTEGER PRIMARY KEY,
  created_at      TEXT NOT NULL,         -- ISO 8601 UTC, e.g. 2026-11-23T10:40:50.123Z
  kvscope_version TEXT NOT NULL,
  kind            TEXT NOT NULL CHECK (kind IN ('quantize', 'replay')),
  status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
  model_id        INTEGER REFERENCES models(id),
  dump_id         INTEGER REFERENCES dumps(id),
  dump_path       TEXT,                  -- the path this run read (the dump may have moved since)
  workload        TEXT,
  policy_id       INTEGER REFERENCES policies(id),
  policy_name     TEXT NOT NULL DEFAULT '',
  method          TEXT NOT NULL,
  wall_seconds    REAL,
  note            TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_created ON runs(created_at);
CREATE INDEX runs_method ON runs(method);
CREATE INDEX runs_model ON runs(model_id);
CREATE TABLE run_tags (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  tag    TEXT NOT NULL,
  PRIMARY KEY (run_id, tag)
) WITHOUT ROWID;
CREATE INDEX run_tags_tag ON run_tags(tag);
CREATE TABLE run_summaries (
  run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
  bits_per_element REAL, k_bits_per_element REAL, v_bits_per_element REAL,
  bytes_per_token REAL, static_bytes REAL, fp16_bytes_per_token REAL,
  k_nmse REAL, v_nmse REAL, k_cos REAL, v_cos REAL,
  attn_cos_mean REAL, attn_cos_min REAL, attn_nmse REAL, attn_kl_mean REAL,
  attn_queries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE head_metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  layer INTEGER NOT NULL, head INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('k', 'v')),
  nmse REAL, cos REAL, mse REAL, max_abs REAL,
  bits INTEGER NOT NULL, elements INTEGER NOT NULL, full_precision INTEGER NOT NULL,
  PRIMARY KEY (run_id, layer, head, kind)
) WITHOUT ROWID;
CREATE TABLE attention_metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  layer INTEGER NOT NULL, head INTEGER NOT NULL,
  out_cos_mean REAL, out_cos_min REAL, out_nmse REAL, kl_mean REAL,
  prob_cos_mean REAL, logit_rmse REAL, logit_max_abs REAL,
  PRIMARY KEY (run_id, layer, head)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: a global identity per run (uuid, kept by merge so merging twice adds nothing),
    // where a merged run came from, rate-distortion points and replay metrics.
    R"sql(
ALTER TABLE runs ADD COLUMN uuid TEXT;
ALTER TABLE runs ADD COLUMN origin TEXT;  -- "<source db path>#<id there>" for merged runs
UPDATE runs SET uuid = lower(hex(randomblob(16))) WHERE uuid IS NULL;
CREATE UNIQUE INDEX runs_uuid ON runs(uuid);
CREATE TABLE rd_points (
  id     INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  method TEXT NOT NULL,
  rate   REAL,                 -- bits per element
  metric TEXT NOT NULL,        -- distortion metric name, e.g. "k_nmse", "attn_cos_mean"
  value  REAL
);
CREATE INDEX rd_points_run ON rd_points(run_id);
CREATE TABLE replay_metrics (
  id     INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  slice  TEXT NOT NULL,        -- workload slice, e.g. "passkey@4096" or "" for the whole workload
  name   TEXT NOT NULL,        -- e.g. "greedy_match_ratio"
  value  REAL
);
CREATE INDEX replay_metrics_run ON replay_metrics(run_id);
)sql",
    // 2 -> 3: the sweep cell a run measured (content hash of its inputs, so a rerun skips it), and
    // the two QuantizeReport fields that were not kept yet (NULL for older runs).
    R"sql(
ALTER TABLE runs ADD COLUMN cell_hash TEXT;  -- "fnv1a64:<16 hex>" (core/sweep), NULL outside sweeps
CREATE INDEX runs_cell ON runs(cell_hash);
ALTER TABLE run_summaries ADD COLUMN fixed_width_bits_per_element REAL;
ALTER TABLE run_summaries ADD COLUMN calibration_seconds REAL;
)sql",
    // 3 -> 4: per-item results of replay runs and each slice's per-step KLD distribution (quantiles).
    // (The llama.cpp-style KL statistics are replay_metrics rows: no schema change.)
    R"sql(
CREATE TABLE replay_items (
  run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  slice         TEXT NOT NULL,
  item          INTEGER NOT NULL,   -- 1-based within the slice
  prompt_tokens INTEGER, steps INTEGER,
  score REAL, score_ref REAL,       -- task score with the quantized / reference cache
  kld_mean REAL, kld_p99 REAL, kld_max REAL, dp_mean REAL, same_top REAL, ppl REAL, ppl_ref REAL
);
CREATE INDEX replay_items_run ON replay_items(run_id);
CREATE TABLE replay_kld_quantiles (
  run_id   INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  slice    TEXT NOT NULL,
  fraction REAL NOT NULL,           -- 0..1 of the slice's scored steps
  kld      REAL
);
CREATE INDEX replay_kld_quantiles_run ON replay_kld_quantiles(run_id);
)sql",
    // 4 -> 5: what an item's prompt was when a chat template rendered it, and the per-block bits a
    // policy script chose in replay (core/replay/block_hook.h), so the run can be reproduced.
    R"sql(
ALTER TABLE replay_items ADD COLUMN chat_text TEXT;   -- --chat: the rendered prompt; NULL otherwise
ALTER TABLE replay_items ADD COLUMN token_ids TEXT;   -- --chat: the prompt's ids as a JSON array; NULL otherwise
ALTER TABLE replay_items ADD COLUMN blocks TEXT;      -- block_choices_json (core/replay/block_hook.h); NULL if none
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

}  // namespace

int schema_version_of(SQLite::Database& db, const std::string& db_path) {
  sql::Stmt q(db, db_path, "PRAGMA user_version");
  q.step();
  return static_cast<int>(q.i64(0));
}

namespace {

int checked_schema_version_in_snapshot(SQLite::Database& db, const std::string& db_path) {
  const int version = schema_version_of(db, db_path);
  // user_version is a signed 32-bit field any SQLite tool can set; kvscope never writes a negative one.
  if (version < 0) fail(db_path, "not a kvscope database (schema version {})", version);
  if (version > kSchemaVersion) {
    fail(db_path, "schema version {} is newer than this kvscope {} understands ({}); use a newer kvscope", version,
         KVSCOPE_VERSION, kSchemaVersion);
  }
  sql::Stmt app(db, db_path, "PRAGMA application_id");
  app.step();
  const int64_t app_id = app.i64(0);
  if (app_id != 0 && app_id != kApplicationId) fail(db_path, "not a kvscope database (application_id {:#x})", app_id);
  if (version == 0) {
    sql::Stmt tables(db, db_path, "SELECT count(*) FROM sqlite_master");
    tables.step();
    if (tables.i64(0) != 0) fail(db_path, "not a kvscope database (it has tables but no kvscope schema version)");
  }
  return version;
}

}  // namespace

int checked_schema_version(SQLite::Database& db, const std::string& db_path) {
  // The version and the table count must come from one snapshot: as separate autocommit reads,
  // another process's first migration could commit in between (tables, yet version 0) and a fresh
  // store would be reported as a foreign database.
  const bool own_txn = sqlite3_get_autocommit(db.getHandle()) != 0;
  if (own_txn) sql::exec(db, db_path, "BEGIN");
  try {
    const int version = checked_schema_version_in_snapshot(db, db_path);
    if (own_txn) sql::exec(db, db_path, "COMMIT");
    return version;
  } catch (...) {
    if (own_txn) db.tryExec("ROLLBACK");
    throw;
  }
}

void migrate_schema(SQLite::Database& db, const std::string& db_path, int target) {
  if (target < 0 || target > kSchemaVersion) fail(db_path, "cannot migrate to schema version {}", target);
  if (checked_schema_version(db, db_path) >= target) return;  // the common case takes no write lock
  for (;;) {
    // BEGIN IMMEDIATE before re-reading the version: two processes opening a fresh file must not
    // both run a migration step.
    sql::exec(db, db_path, "BEGIN IMMEDIATE");
    try {
      const int version = checked_schema_version(db, db_path);
      if (version >= target) {
        sql::exec(db, db_path, "COMMIT");
        return;
      }
      sql::exec(db, db_path, kMigrations[version]);
      // PRAGMAs take no parameters; both values are integers this code produces.
      const std::string set_version = fmt::format("PRAGMA user_version = {}", version + 1);
      sql::exec(db, db_path, set_version.c_str());
      const std::string set_app = fmt::format("PRAGMA application_id = {}", kApplicationId);
      sql::exec(db, db_path, set_app.c_str());
      sql::exec(db, db_path, "COMMIT");
    } catch (...) {
      db.tryExec("ROLLBACK");
      throw;
    }
  }
}

}  // namespace kvscope
