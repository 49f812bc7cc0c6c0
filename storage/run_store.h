#pragma once
// RunStore: every run kvscope measures, kept in one SQLite file (WAL, foreign keys, busy timeout,
// user_version migrations; see storage/schema.cpp). A run and all its rows are written in one
// transaction with status 'done', so a crash can lose a run but never leave half of one.
// All errors are kvscope::Error naming the database file (and the SQL statement, if SQLite failed).
// One RunStore is one connection: use it from one thread at a time (open one per thread; readers
// in other threads or processes never block the writer, WAL).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/quant/report.h"

namespace kvscope {

// $XDG_DATA_HOME/kvscope/kvscope.sqlite, else $HOME/.local/share/kvscope/kvscope.sqlite.
std::string default_db_path();

struct RdPoint {
  std::string method;
  double rate = 0;      // bits per element
  std::string metric;   // distortion metric name, e.g. "k_nmse"
  double value = 0;
};

struct ReplayMetric {
  std::string slice;    // workload slice ("" = the whole workload)
  std::string name;     // e.g. "greedy_match_ratio", "peak_kv_memory_mb"
  double value = 0;
};

// One workload item of a replay run (table replay_items; core's ItemResult).
struct ReplayItemRow {
  std::string slice;
  int item = 0;  // 1-based within the slice
  int prompt_tokens = 0, steps = 0;
  double score = 0, score_ref = 0;  // the task score with the quantized / reference cache
  double kld_mean = 0, kld_p99 = 0, kld_max = 0, dp_mean = 0, same_top = 0, ppl = 0, ppl_ref = 0;
  std::string chat_text{};  // --chat: the rendered prompt ("" otherwise)
  std::string token_ids{};  // --chat: the prompt's token ids, a JSON array ("" otherwise)
  std::string blocks{};     // per-block bits of a policy script (core/replay/block_hook.h's JSON; "" = none)
};

// A point of a slice's per-step next-token KLD distribution (table replay_kld_quantiles).
struct KldQuantile {
  std::string slice;
  double fraction = 0;  // 0..1 (0 = min, 0.5 = median, 1 = max)
  double kld = 0;
};

// What the caller knows about a run beyond its report; rows here are written with the run.
// (Members have {} initializers so designated initializers may omit any of them under -Wextra.)
struct RunContext {
  std::string dump_hash{};  // hash_file() of the dump; empty = hashed from report.dump_path if it exists
  std::string workload{};   // replay/sweep workload ("" for a plain dump)
  std::vector<std::string> tags{};
  std::string note{};
  std::vector<RdPoint> rd_points{};
  std::vector<ReplayMetric> replay_metrics{};
  std::vector<ReplayItemRow> replay_items{};
  std::vector<KldQuantile> kld_quantiles{};
  std::string cell_hash{};  // the sweep cell this run measured ("" outside sweeps)
};

// A run as stored. For replay runs `report` carries only the identification fields.
struct StoredRun {
  int64_t id = 0;
  std::string uuid;        // global identity, kept by merge
  std::string origin;      // "<source db>#<id>" when merged in, else ""
  std::string created_at;  // ISO 8601 UTC
  std::string kvscope_version;
  std::string kind = "quantize";  // "quantize" | "replay"
  std::string status = "done";    // "running" | "done" | "failed"
  std::string dump_hash, policy_hash, workload, note;
  std::string cell_hash;  // "" outside sweeps
  std::vector<std::string> tags;
  QuantizeReport report;
  std::vector<RdPoint> rd_points;
  std::vector<ReplayMetric> replay_metrics;
  std::vector<ReplayItemRow> replay_items;
  std::vector<KldQuantile> kld_quantiles;
};

// One line of a run listing (no per-head rows).
struct RunListing {
  int64_t id = 0;
  std::string created_at, kind, status, model_id, method, policy_name, note;
  std::string source;  // what the run measured: the dump path (quantize) or the workload (replay)
  std::vector<std::string> tags;
  double bits_per_element = 0, k_nmse = 0, v_nmse = 0, attn_cos_mean = 0, wall_seconds = 0;  // NaN when absent
  // Replay runs: the run's slices pooled, each weighted by its scored steps (exact for the greedy
  // match ratio and the KL, which are means over steps; a steps-weighted mean for the bits per
  // KV entry). NaN for quantize runs and replays without these metrics.
  double kv_bits = 0, greedy_match = 0, next_token_kl = 0;
};

struct RunFilter {
  std::string model{};   // substring of the model id
  std::string method{};  // exact
  std::string tag{};     // exact
  std::string since{};   // YYYY-MM-DD[THH:MM[:SS]], or relative: 30m, 12h, 7d
  std::string status{};  // exact; "" = any
  int64_t limit = 0;   // newest first; 0 = all
};

struct RunStoreOptions {
  bool read_only = false;       // never writes; the schema must already be current
  int busy_timeout_ms = 10000;  // how long to wait for another process's write lock
};

class RunStore {
 public:
  // Creates the file (and its directory) unless read_only; migrates an older schema.
  explicit RunStore(const std::string& path, const RunStoreOptions& opts = {});
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;
  const std::string& path() const;

  int64_t add_quantize_run(const QuantizeReport& report, const RunContext& ctx);
  // A replay run: identification from `identity` (method, policy, model, dump, wall time).
  int64_t add_replay_run(const QuantizeReport& identity, const RunContext& ctx);
  // Inserts a run read from another store (merge), keeping uuid, time, version and status.
  // Returns nullopt when a run with the same uuid is already here.
  std::optional<int64_t> import_run(const StoredRun& run, const std::string& origin);

  std::vector<RunListing> list_runs(const RunFilter& filter = {});
  StoredRun load_run(int64_t id);  // Error when there is no such run
  // Sweep resume: whether a run with status 'done' measured this cell, and all such cells.
  bool has_done_cell(const std::string& cell_hash);
  std::vector<std::string> done_cell_hashes();
  void delete_run(int64_t id);
  void add_tag(int64_t id, const std::string& tag);
  void remove_tag(int64_t id, const std::string& tag);
  void set_note(int64_t id, const std::string& note);

  // Runs `body` in one write transaction (nested store calls join it); rolled back if it throws.
  void in_transaction(const std::function<void()>& body);
  std::string integrity_check();  // "ok" or SQLite's findings

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Normalises RunFilter::since to an ISO prefix comparable with created_at; Error on bad input.
std::string normalize_since(const std::string& since);

}  // namespace kvscope
