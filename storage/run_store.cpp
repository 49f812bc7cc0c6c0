#include "storage/run_store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <limits>
#include <regex>
#include <thread>

#include <SQLiteCpp/Database.h>
#include <fmt/format.h>

#include "core/util/error.h"
#include "core/util/content_hash.h"
#include "storage/schema.h"
#include "storage/sql.h"

namespace fs = std::filesystem;

namespace kvscope {

std::string default_db_path() {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  // The XDG spec says relative values are invalid and must be ignored.
  if (xdg && *xdg && fs::path(xdg).is_absolute()) return (fs::path(xdg) / "kvscope" / "kvscope.sqlite").string();
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw Error("run store: neither XDG_DATA_HOME nor HOME is set; pass --db FILE");
  return (fs::path(home) / ".local" / "share" / "kvscope" / "kvscope.sqlite").string();
}

std::string normalize_since(const std::string& since) {
  static const std::regex relative(R"(^(\d{1,6})([mhd])$)");
  static const std::regex absolute(R"(^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?)?Z?$)");
  std::smatch m;
  if (std::regex_match(since, m, relative)) {
    const long n = std::stol(m[1].str());
    const long unit = m[2] == "m" ? 60 : m[2] == "h" ? 3600 : 86400;
    const std::time_t t = std::time(nullptr) - n * unit;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return buf;
  }
  if (std::regex_match(since, absolute)) return since.back() == 'Z' ? since.substr(0, since.size() - 1) : since;
  throw Error(fmt::format("--since \"{}\": expected YYYY-MM-DD[THH:MM[:SS]] (UTC) or an age like 30m, 12h, 7d", since));
}

namespace {

void check_tag(const std::string& tag) {
  const bool bad = tag.empty() || tag.size() > 100 || std::any_of(tag.begin(), tag.end(), [](unsigned char c) {
                     return c <= ' ' || c == ',' || c == 0x7f;
                   });
  if (bad) throw Error(fmt::format("tag \"{}\": tags are 1-100 characters without spaces, commas or control characters", tag));
}

int64_t checked_i64(uint64_t v, const std::string& where) {
  if (v > uint64_t(std::numeric_limits<int64_t>::max())) fail(where, "value {} does not fit the database", v);
  return static_cast<int64_t>(v);
}

// Who a run is, apart from its report.
struct RunIdentity {
  std::string uuid;        // "" = new random
  std::string origin;
  std::string created_at;  // "" = now
  std::string kvscope_version = KVSCOPE_VERSION;
  std::string kind = "quantize";
  std::string status = "done";
  std::string dump_hash, workload, note, cell_hash;
  std::vector<std::string> tags;
  bool has_summary = true;
};

}  // namespace

struct RunStore::Impl {
  std::string path;
  bool read_only = false;
  SQLite::Database db;
  int tx_depth = 0;

  Impl(const std::string& p, const RunStoreOptions& o) : path(p), read_only(o.read_only), db(open(p, o)) {}

  static SQLite::Database open(const std::string& path, const RunStoreOptions& o) {
    if (path.empty()) throw Error("run store: empty database path");
    if (o.read_only) {
      if (!fs::exists(path)) fail(path, "no such database");
    } else {
      const fs::path dir = fs::path(path).parent_path();
      std::error_code ec;
      if (!dir.empty()) fs::create_directories(dir, ec);
      if (ec) fail(path, "cannot create directory {}: {}", dir.string(), ec.message());
    }
    if (fs::is_directory(path)) fail(path, "is a directory, not a database file");
    try {
      const int flags = o.read_only ? SQLite::OPEN_READONLY : (SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      return SQLite::Database(path, flags, o.busy_timeout_ms);
    } catch (const SQLite::Exception& e) {
      fail(path, "cannot open database: {}", e.what());
    }
  }

  void require_writable(const char* what) const {
    if (read_only) fail(path, "opened read-only; cannot {}", what);
  }

  // Write transactions start IMMEDIATE: the write lock is taken (waiting up to the busy timeout)
  // before anything is read, so a concurrent writer can never invalidate our snapshot mid-way.
  // Nested ones (store calls inside in_transaction) are savepoints: a run that fails inside a
  // longer transaction still leaves none of its rows, even if the caller goes on.
  struct WriteTx {
    Impl& s;
    bool top;
    bool done = false;
    explicit WriteTx(Impl& store) : s(store), top(store.tx_depth == 0) {
      s.require_writable("write");
      sql::exec(s.db, s.path, top ? "BEGIN IMMEDIATE" : "SAVEPOINT nested_write");
      ++s.tx_depth;
    }
    void commit() {
      sql::exec(s.db, s.path, top ? "COMMIT" : "RELEASE nested_write");
      done = true;
    }
    ~WriteTx() {
      --s.tx_depth;
      if (done) return;
      s.db.tryExec(top ? "ROLLBACK" : "ROLLBACK TO nested_write; RELEASE nested_write");
    }
  };
  // A read snapshot across several SELECTs (joins the write transaction when inside one).
  struct ReadTx {
    Impl& s;
    bool top;
    explicit ReadTx(Impl& store) : s(store), top(store.tx_depth == 0) {
      if (top) sql::exec(s.db, s.path, "BEGIN");
      ++s.tx_depth;
    }
    ~ReadTx() {
      --s.tx_depth;
      if (top) s.db.tryExec("COMMIT");
    }
  };

  sql::Stmt stmt(const char* text) { return sql::Stmt(db, path, text); }

  std::optional<int64_t> lookup(const char* query, const std::string& key) {
    auto q = stmt(query);
    q.bind(1, key);
    if (q.step()) return q.i64(0);
    return std::nullopt;
  }

  std::optional<int64_t> model_id(const std::string& name) {
    if (name.empty()) return std::nullopt;
    if (auto id = lookup("SELECT id FROM models WHERE name = ?1", name)) return id;
    stmt("INSERT INTO models(name) VALUES (?1)").bind(1, name).run();
    return db.getLastInsertRowid();
  }

  std::optional<int64_t> policy_id(const std::string& json) {
    if (json.empty()) return std::nullopt;
    const std::string hash = hash_text(json);
    if (auto id = lookup("SELECT id FROM policies WHERE hash = ?1", hash)) return id;
    stmt("INSERT INTO policies(hash, json) VALUES (?1, ?2)").bind(1, hash).bind(2, json).run();
    return db.getLastInsertRowid();
  }

  std::optional<int64_t> dump_id(const std::string& hash, const QuantizeReport& r, std::optional<int64_t> model) {
    const DumpShape& s = r.shape;
    const bool no_dump = r.dump_path.empty() && s.layers == 0 && s.kv_heads == 0 && s.tokens == 0;
    if (hash.empty() && no_dump) return std::nullopt;
    if (!hash.empty()) {
      if (auto id = lookup("SELECT id FROM dumps WHERE content_hash = ?1", hash)) return id;
    }
    auto q = stmt(
        "INSERT INTO dumps(content_hash, path, model_id, layers, kv_heads, q_heads, head_dim, tokens) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    q.bind_text_or_null(1, hash).bind(2, r.dump_path);
    model ? q.bind(3, *model) : q.bind_null(3);
    q.bind(4, s.layers).bind(5, s.kv_heads).bind(6, s.q_heads).bind(7, s.head_dim).bind(8, s.tokens).run();
    return db.getLastInsertRowid();
  }

  // Inserts one run and all its rows; the caller holds the write transaction.
  int64_t insert_run(const RunIdentity& who, const QuantizeReport& r, const std::vector<RdPoint>& rd,
                     const std::vector<ReplayMetric>& replay, const std::vector<ReplayItemRow>& items = {},
                     const std::vector<KldQuantile>& quantiles = {}) {
    if (r.method.empty()) fail(path, "cannot store a run without a method");
    for (const auto& t : who.tags) check_tag(t);
    const auto model = model_id(r.model_id);
    const auto dump = dump_id(who.dump_hash, r, model);
    const auto policy = policy_id(r.policy_json);

    auto run = stmt(
        "INSERT INTO runs(created_at, kvscope_version, kind, status, model_id, dump_id, dump_path, workload,"
        " policy_id, policy_name, method, wall_seconds, note, uuid, origin, cell_hash) VALUES ("
        "coalesce(?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
        " coalesce(?14, lower(hex(randomblob(16)))), ?15, ?16)");
    run.bind_text_or_null(1, who.created_at).bind(2, who.kvscope_version).bind(3, who.kind).bind(4, who.status);
    model ? run.bind(5, *model) : run.bind_null(5);
    dump ? run.bind(6, *dump) : run.bind_null(6);
    run.bind_text_or_null(7, r.dump_path).bind_text_or_null(8, who.workload);
    policy ? run.bind(9, *policy) : run.bind_null(9);
    run.bind(10, r.policy_name).bind(11, r.method).bind(12, r.wall_seconds).bind(13, who.note);
    run.bind_text_or_null(14, who.uuid).bind_text_or_null(15, who.origin).bind_text_or_null(16, who.cell_hash).run();
    const int64_t id = db.getLastInsertRowid();

    if (who.has_summary) {
      auto s = stmt(
          "INSERT INTO run_summaries(run_id, bits_per_element, k_bits_per_element, v_bits_per_element,"
          " bytes_per_token, static_bytes, fp16_bytes_per_token, k_nmse, v_nmse, k_cos, v_cos,"
          " attn_cos_mean, attn_cos_min, attn_nmse, attn_kl_mean, attn_queries, fixed_width_bits_per_element,"
          " calibration_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)");
      s.bind(1, id).bind(2, r.bits_per_element).bind(3, r.k_bits_per_element).bind(4, r.v_bits_per_element);
      s.bind(5, r.bytes_per_token).bind(6, r.static_bytes).bind(7, r.fp16_bytes_per_token);
      s.bind(8, r.k_nmse).bind(9, r.v_nmse).bind(10, r.k_cos).bind(11, r.v_cos);
      s.bind(12, r.attn_cos_mean).bind(13, r.attn_cos_min).bind(14, r.attn_nmse).bind(15, r.attn_kl_mean);
      s.bind(16, r.attn_queries).bind(17, r.fixed_width_bits_per_element).bind(18, r.calibration_seconds).run();
    }
    if (!r.per_head.empty()) {
      auto h = stmt(
          "INSERT INTO head_metrics(run_id, layer, head, kind, nmse, cos, mse, max_abs, bits, elements, full_precision)"
          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
      for (const HeadMetrics& m : r.per_head) {
        if (m.kind != 'k' && m.kind != 'v') fail(path, "head metrics of layer {} head {}: kind must be k or v", m.layer, m.head);
        h.bind(1, id).bind(2, m.layer).bind(3, m.head).bind(4, std::string(1, m.kind));
        h.bind(5, m.nmse).bind(6, m.cos).bind(7, m.mse).bind(8, m.max_abs);
        h.bind(9, checked_i64(m.bits, path)).bind(10, checked_i64(m.elements, path)).bind(11, int(m.full_precision));
        h.run();
        h.reset();
      }
    }
    if (!r.attention.empty()) {
      auto a = stmt(
          "INSERT INTO attention_metrics(run_id, layer, head, out_cos_mean, out_cos_min, out_nmse, kl_mean,"
          " prob_cos_mean, logit_rmse, logit_max_abs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
      for (const AttentionMetrics& m : r.attention) {
        a.bind(1, id).bind(2, m.layer).bind(3, m.head).bind(4, m.out_cos_mean).bind(5, m.out_cos_min);
        a.bind(6, m.out_nmse).bind(7, m.kl_mean).bind(8, m.prob_cos_mean).bind(9, m.logit_rmse).bind(10, m.logit_max_abs);
        a.run();
        a.reset();
      }
    }
    if (!who.tags.empty()) {
      auto t = stmt("INSERT OR IGNORE INTO run_tags(run_id, tag) VALUES (?1, ?2)");
      for (const auto& tag : who.tags) {
        t.bind(1, id).bind(2, tag).run();
        t.reset();
      }
    }
    if (!rd.empty()) {
      auto p = stmt("INSERT INTO rd_points(run_id, method, rate, metric, value) VALUES (?1, ?2, ?3, ?4, ?5)");
      for (const RdPoint& x : rd) {
        p.bind(1, id).bind(2, x.method).bind(3, x.rate).bind(4, x.metric).bind(5, x.value).run();
        p.reset();
      }
    }
    if (!replay.empty()) {
      auto p = stmt("INSERT INTO replay_metrics(run_id, slice, name, value) VALUES (?1, ?2, ?3, ?4)");
      for (const ReplayMetric& x : replay) {
        p.bind(1, id).bind(2, x.slice).bind(3, x.name).bind(4, x.value).run();
        p.reset();
      }
    }
    if (!items.empty()) {
      auto p = stmt(
          "INSERT INTO replay_items(run_id, slice, item, prompt_tokens, steps, score, score_ref, kld_mean, kld_p99, kld_max,"
          " dp_mean, same_top, ppl, ppl_ref, chat_text, token_ids, blocks)"
          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)");
      for (const ReplayItemRow& x : items) {
        p.bind(1, id).bind(2, x.slice).bind(3, x.item).bind(4, x.prompt_tokens).bind(5, x.steps).bind(6, x.score);
        p.bind(7, x.score_ref).bind(8, x.kld_mean).bind(9, x.kld_p99).bind(10, x.kld_max).bind(11, x.dp_mean);
        p.bind(12, x.same_top).bind(13, x.ppl).bind(14, x.ppl_ref);
        p.bind_text_or_null(15, x.chat_text).bind_text_or_null(16, x.token_ids).bind_text_or_null(17, x.blocks).run();
        p.reset();
      }
    }
    if (!quantiles.empty()) {
      auto p = stmt("INSERT INTO replay_kld_quantiles(run_id, slice, fraction, kld) VALUES (?1, ?2, ?3, ?4)");
      for (const KldQuantile& x : quantiles) {
        p.bind(1, id).bind(2, x.slice).bind(3, x.fraction).bind(4, x.kld).run();
        p.reset();
      }
    }
    return id;
  }

  void require_run(int64_t id) {
    auto q = stmt("SELECT 1 FROM runs WHERE id = ?1");
    q.bind(1, id);
    if (!q.step()) fail(path, "no run {}", id);
  }

  // The steps of load_run, one table (or family of tables) each; defined next to it.
  void load_identity(int64_t id, StoredRun& run);
  void load_summary(int64_t id, QuantizeReport& r);
  void load_head_metrics(int64_t id, QuantizeReport& r);
  void load_attention_metrics(int64_t id, QuantizeReport& r);
  void load_replay_rows(int64_t id, StoredRun& run);
};

RunStore::RunStore(const std::string& path, const RunStoreOptions& opts) : impl_(std::make_unique<Impl>(path, opts)) {
  Impl& s = *impl_;
  // Validate before changing anything: a random file or a future schema is reported, not touched.
  const int version = checked_schema_version(s.db, s.path);
  sql::exec(s.db, s.path, "PRAGMA foreign_keys = ON");
  if (opts.read_only) {
    if (version != kSchemaVersion) {
      fail(s.path, "schema version {} is older than {}; open it once read-write (e.g. kvscope runs list --db {}) to upgrade",
           version, kSchemaVersion, s.path);
    }
    return;
  }
  // WAL: readers never block the writer nor each other. synchronous=FULL: a committed run
  // survives a power cut too, not only a crash of kvscope.
  // Two processes opening a fresh file at once (the GUI and a CLI run) can get SQLITE_BUSY from the
  // switch to WAL or the first migration without the busy handler being consulted (SQLite refuses
  // to wait where waiting could deadlock). Retry the whole idempotent set-up for a while.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(opts.busy_timeout_ms, 1000));
  for (;;) {
    try {
      sql::exec(s.db, s.path, "PRAGMA journal_mode = WAL");
      sql::exec(s.db, s.path, "PRAGMA synchronous = FULL");
      migrate_schema(s.db, s.path);
      return;
    } catch (const Error& e) {
      const std::string what = e.what();
      const bool busy = what.find("database is locked") != std::string::npos || what.find("database is busy") != std::string::npos;
      if (!busy || std::chrono::steady_clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

RunStore::~RunStore() = default;

const std::string& RunStore::path() const { return impl_->path; }

static std::string dump_hash_for(const QuantizeReport& report, const RunContext& ctx) {
  if (!ctx.dump_hash.empty() || report.dump_path.empty()) return ctx.dump_hash;
  std::error_code ec;
  return fs::is_regular_file(report.dump_path, ec) ? hash_file(report.dump_path) : std::string();
}

int64_t RunStore::add_quantize_run(const QuantizeReport& report, const RunContext& ctx) {
  RunIdentity who;
  who.dump_hash = dump_hash_for(report, ctx);  // before locking: hashing a large dump takes a while
  who.workload = ctx.workload;
  who.cell_hash = ctx.cell_hash;
  who.tags = ctx.tags;
  who.note = ctx.note;
  Impl::WriteTx tx(*impl_);
  const int64_t id = impl_->insert_run(who, report, ctx.rd_points, ctx.replay_metrics);
  tx.commit();
  return id;
}

int64_t RunStore::add_replay_run(const QuantizeReport& identity, const RunContext& ctx) {
  RunIdentity who;
  who.kind = "replay";
  who.has_summary = false;
  who.dump_hash = dump_hash_for(identity, ctx);
  who.workload = ctx.workload;
  who.cell_hash = ctx.cell_hash;
  who.tags = ctx.tags;
  who.note = ctx.note;
  QuantizeReport id_only;  // replay stores its identification, not tensor metrics
  id_only.method = identity.method;
  id_only.policy_name = identity.policy_name;
  id_only.policy_json = identity.policy_json;
  id_only.dump_path = identity.dump_path;
  id_only.shape = identity.shape;
  id_only.model_id = identity.model_id;
  id_only.wall_seconds = identity.wall_seconds;
  Impl::WriteTx tx(*impl_);
  const int64_t id = impl_->insert_run(who, id_only, ctx.rd_points, ctx.replay_metrics, ctx.replay_items, ctx.kld_quantiles);
  tx.commit();
  return id;
}

std::optional<int64_t> RunStore::import_run(const StoredRun& run, const std::string& origin) {
  if (run.uuid.empty()) fail(impl_->path, "cannot import run {} without a uuid", run.id);
  Impl::WriteTx tx(*impl_);
  if (impl_->lookup("SELECT id FROM runs WHERE uuid = ?1", run.uuid)) {
    tx.commit();
    return std::nullopt;
  }
  RunIdentity who;
  who.uuid = run.uuid;
  who.origin = run.origin.empty() ? origin : run.origin;  // keep the first origin across chained merges
  who.created_at = run.created_at;
  who.kvscope_version = run.kvscope_version;
  who.kind = run.kind;
  who.status = run.status;
  who.dump_hash = run.dump_hash;
  who.workload = run.workload;
  who.cell_hash = run.cell_hash;
  who.note = run.note;
  who.tags = run.tags;
  who.has_summary = run.kind == "quantize";
  const int64_t id = impl_->insert_run(who, run.report, run.rd_points, run.replay_metrics, run.replay_items, run.kld_quantiles);
  tx.commit();
  return id;
}

std::vector<RunListing> RunStore::list_runs(const RunFilter& f) {
  const std::string since = f.since.empty() ? std::string() : normalize_since(f.since);
  auto q = impl_->stmt(
      "SELECT r.id, r.created_at, r.kind, r.status, coalesce(m.name, ''), r.method, r.policy_name, r.note,"
      " (SELECT group_concat(tag, ',') FROM run_tags t WHERE t.run_id = r.id),"
      " s.bits_per_element, s.k_nmse, s.v_nmse, s.attn_cos_mean, r.wall_seconds,"
      " w.kv_bits, w.greedy_match, w.next_token_kl,"
      " CASE r.kind WHEN 'replay' THEN r.workload ELSE r.dump_path END"
      " FROM runs r LEFT JOIN models m ON m.id = r.model_id LEFT JOIN run_summaries s ON s.run_id = r.id"
      // Replay metrics pooled over slices by scored steps: sum(value * steps) / sum(steps), from one
      // pass that pivots each (run, slice) (a self-join on "steps" was 9x slower on 4,000 runs).
      " LEFT JOIN (SELECT run_id,"
      "   sum(b * st) / sum(CASE WHEN b IS NOT NULL THEN st END) AS kv_bits,"
      "   sum(g * st) / sum(CASE WHEN g IS NOT NULL THEN st END) AS greedy_match,"
      "   sum(kl * st) / sum(CASE WHEN kl IS NOT NULL THEN st END) AS next_token_kl"
      "   FROM (SELECT run_id, slice, max(CASE name WHEN 'steps' THEN value END) AS st,"
      "     max(CASE name WHEN 'avg_bits_per_kv_token' THEN value END) AS b,"
      "     max(CASE name WHEN 'greedy_match_ratio' THEN value END) AS g,"
      "     max(CASE name WHEN 'next_token_kl' THEN value END) AS kl"
      "     FROM replay_metrics WHERE name IN ('steps', 'avg_bits_per_kv_token', 'greedy_match_ratio', 'next_token_kl')"
      "     GROUP BY run_id, slice)"
      "   WHERE st > 0 GROUP BY run_id) w ON w.run_id = r.id"
      " WHERE (?1 = '' OR instr(m.name, ?1) > 0) AND (?2 = '' OR r.method = ?2)"
      " AND (?3 = '' OR EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag = ?3))"
      " AND (?4 = '' OR r.created_at >= ?4) AND (?5 = '' OR r.status = ?5)"
      " ORDER BY r.id DESC LIMIT ?6");
  q.bind(1, f.model).bind(2, f.method).bind(3, f.tag).bind(4, since).bind(5, f.status);
  q.bind(6, f.limit > 0 ? f.limit : int64_t{-1});
  std::vector<RunListing> out;
  while (q.step()) {
    RunListing l;
    l.id = q.i64(0);
    l.created_at = q.text(1);
    l.kind = q.text(2);
    l.status = q.text(3);
    l.model_id = q.text(4);
    l.method = q.text(5);
    l.policy_name = q.text(6);
    l.note = q.text(7);
    const std::string tags = q.text(8);
    for (size_t b = 0; b < tags.size();) {
      const size_t e = std::min(tags.find(',', b), tags.size());
      l.tags.push_back(tags.substr(b, e - b));
      b = e + 1;
    }
    std::sort(l.tags.begin(), l.tags.end());
    l.bits_per_element = q.real(9);
    l.k_nmse = q.real(10);
    l.v_nmse = q.real(11);
    l.attn_cos_mean = q.real(12);
    l.wall_seconds = q.real(13);
    l.kv_bits = q.real(14);
    l.greedy_match = q.real(15);
    l.next_token_kl = q.real(16);
    l.source = q.text(17);
    out.push_back(std::move(l));
  }
  return out;
}

void RunStore::Impl::load_identity(int64_t id, StoredRun& run) {
  QuantizeReport& r = run.report;
  auto q = stmt(
      "SELECT r.id, r.uuid, coalesce(r.origin, ''), r.created_at, r.kvscope_version, r.kind, r.status,"
      " coalesce(m.name, ''), coalesce(d.content_hash, ''), coalesce(r.dump_path, ''), coalesce(r.workload, ''),"
      " coalesce(p.hash, ''), coalesce(p.json, ''), r.policy_name, r.method, r.wall_seconds, r.note,"
      " coalesce(d.layers, 0), coalesce(d.kv_heads, 0), coalesce(d.q_heads, 0), coalesce(d.head_dim, 0),"
      " coalesce(d.tokens, 0), coalesce(r.cell_hash, '')"
      " FROM runs r LEFT JOIN models m ON m.id = r.model_id LEFT JOIN dumps d ON d.id = r.dump_id"
      " LEFT JOIN policies p ON p.id = r.policy_id WHERE r.id = ?1");
  q.bind(1, id);
  if (!q.step()) fail(path, "no run {}", id);
  run.id = q.i64(0);
  run.uuid = q.text(1);
  run.origin = q.text(2);
  run.created_at = q.text(3);
  run.kvscope_version = q.text(4);
  run.kind = q.text(5);
  run.status = q.text(6);
  r.model_id = q.text(7);
  run.dump_hash = q.text(8);
  r.dump_path = q.text(9);
  run.workload = q.text(10);
  run.policy_hash = q.text(11);
  r.policy_json = q.text(12);
  r.policy_name = q.text(13);
  r.method = q.text(14);
  r.wall_seconds = q.real(15);
  run.note = q.text(16);
  r.shape = {int(q.i64(17)), int(q.i64(18)), int(q.i64(19)), int(q.i64(20)), int(q.i64(21))};
  run.cell_hash = q.text(22);
}

void RunStore::Impl::load_summary(int64_t id, QuantizeReport& r) {
  auto q = stmt(
      "SELECT bits_per_element, k_bits_per_element, v_bits_per_element, bytes_per_token, static_bytes,"
      " fp16_bytes_per_token, k_nmse, v_nmse, k_cos, v_cos, attn_cos_mean, attn_cos_min, attn_nmse,"
      " attn_kl_mean, attn_queries, coalesce(fixed_width_bits_per_element, 0), coalesce(calibration_seconds, 0)"
      " FROM run_summaries WHERE run_id = ?1");
  q.bind(1, id);
  if (q.step()) {
    r.bits_per_element = q.real(0);
    r.k_bits_per_element = q.real(1);
    r.v_bits_per_element = q.real(2);
    r.bytes_per_token = q.real(3);
    r.static_bytes = q.real(4);
    r.fp16_bytes_per_token = q.real(5);
    r.k_nmse = q.real(6);
    r.v_nmse = q.real(7);
    r.k_cos = q.real(8);
    r.v_cos = q.real(9);
    r.attn_cos_mean = q.real(10);
    r.attn_cos_min = q.real(11);
    r.attn_nmse = q.real(12);
    r.attn_kl_mean = q.real(13);
    r.attn_queries = int(q.i64(14));
    r.fixed_width_bits_per_element = q.real(15);
    r.calibration_seconds = q.real(16);
  }
}

void RunStore::Impl::load_head_metrics(int64_t id, QuantizeReport& r) {
  auto q = stmt(
      "SELECT layer, head, kind, nmse, cos, mse, max_abs, bits, elements, full_precision FROM head_metrics"
      " WHERE run_id = ?1 ORDER BY layer, head, kind");
  q.bind(1, id);
  while (q.step()) {
    HeadMetrics m;
    m.layer = int(q.i64(0));
    m.head = int(q.i64(1));
    m.kind = q.text(2).at(0);
    m.nmse = q.real(3);
    m.cos = q.real(4);
    m.mse = q.real(5);
    m.max_abs = q.real(6);
    m.bits = uint64_t(q.i64(7));
    m.elements = uint64_t(q.i64(8));
    m.full_precision = q.i64(9) != 0;
    r.per_head.push_back(m);
  }
}

void RunStore::Impl::load_attention_metrics(int64_t id, QuantizeReport& r) {
  auto q = stmt(
      "SELECT layer, head, out_cos_mean, out_cos_min, out_nmse, kl_mean, prob_cos_mean, logit_rmse, logit_max_abs"
      " FROM attention_metrics WHERE run_id = ?1 ORDER BY layer, head");
  q.bind(1, id);
  while (q.step()) {
    AttentionMetrics m;
    m.layer = int(q.i64(0));
    m.head = int(q.i64(1));
    m.out_cos_mean = q.real(2);
    m.out_cos_min = q.real(3);
    m.out_nmse = q.real(4);
    m.kl_mean = q.real(5);
    m.prob_cos_mean = q.real(6);
    m.logit_rmse = q.real(7);
    m.logit_max_abs = q.real(8);
    r.attention.push_back(m);
  }
}

// Tags, RD points and the replay tables.
void RunStore::Impl::load_replay_rows(int64_t id, StoredRun& run) {
  {
    auto q = stmt("SELECT tag FROM run_tags WHERE run_id = ?1 ORDER BY tag");
    q.bind(1, id);
    while (q.step()) run.tags.push_back(q.text(0));
  }
  {
    auto q = stmt("SELECT method, rate, metric, value FROM rd_points WHERE run_id = ?1 ORDER BY id");
    q.bind(1, id);
    while (q.step()) run.rd_points.push_back({q.text(0), q.real(1), q.text(2), q.real(3)});
  }
  {
    auto q = stmt("SELECT slice, name, value FROM replay_metrics WHERE run_id = ?1 ORDER BY id");
    q.bind(1, id);
    while (q.step()) run.replay_metrics.push_back({q.text(0), q.text(1), q.real(2)});
  }
  {
    auto q = stmt(
        "SELECT slice, item, prompt_tokens, steps, score, score_ref, kld_mean, kld_p99, kld_max, dp_mean, same_top, ppl,"
        " ppl_ref, chat_text, token_ids, blocks FROM replay_items WHERE run_id = ?1 ORDER BY rowid");
    q.bind(1, id);
    while (q.step()) {
      ReplayItemRow x;
      x.slice = q.text(0);
      x.item = static_cast<int>(q.i64(1));
      x.prompt_tokens = static_cast<int>(q.i64(2));
      x.steps = static_cast<int>(q.i64(3));
      x.score = q.real(4);
      x.score_ref = q.real(5);
      x.kld_mean = q.real(6);
      x.kld_p99 = q.real(7);
      x.kld_max = q.real(8);
      x.dp_mean = q.real(9);
      x.same_top = q.real(10);
      x.ppl = q.real(11);
      x.ppl_ref = q.real(12);
      x.chat_text = q.text(13);
      x.token_ids = q.text(14);
      x.blocks = q.text(15);
      run.replay_items.push_back(std::move(x));
    }
  }
  {
    auto q = stmt("SELECT slice, fraction, kld FROM replay_kld_quantiles WHERE run_id = ?1 ORDER BY rowid");
    q.bind(1, id);
    while (q.step()) run.kld_quantiles.push_back({q.text(0), q.real(1), q.real(2)});
  }
}

StoredRun RunStore::load_run(int64_t id) {
  Impl& s = *impl_;
  Impl::ReadTx tx(s);  // one snapshot: a concurrent delete cannot leave us half a run
  StoredRun run;
  s.load_identity(id, run);
  s.load_summary(id, run.report);
  s.load_head_metrics(id, run.report);
  s.load_attention_metrics(id, run.report);
  s.load_replay_rows(id, run);
  return run;
}

bool RunStore::has_done_cell(const std::string& cell_hash) {
  auto q = impl_->stmt("SELECT 1 FROM runs WHERE cell_hash = ?1 AND status = 'done' LIMIT 1");
  q.bind(1, cell_hash);
  return q.step();
}

std::vector<std::string> RunStore::done_cell_hashes() {
  auto q = impl_->stmt("SELECT DISTINCT cell_hash FROM runs WHERE cell_hash IS NOT NULL AND status = 'done'");
  std::vector<std::string> out;
  while (q.step()) out.push_back(q.text(0));
  return out;
}

void RunStore::delete_run(int64_t id) {
  Impl::WriteTx tx(*impl_);
  impl_->stmt("DELETE FROM runs WHERE id = ?1").bind(1, id).run();  // rows cascade
  if (impl_->db.getChanges() == 0) fail(impl_->path, "no run {}", id);
  tx.commit();
}

void RunStore::add_tag(int64_t id, const std::string& tag) {
  check_tag(tag);
  Impl::WriteTx tx(*impl_);
  impl_->require_run(id);
  impl_->stmt("INSERT OR IGNORE INTO run_tags(run_id, tag) VALUES (?1, ?2)").bind(1, id).bind(2, tag).run();
  tx.commit();
}

void RunStore::remove_tag(int64_t id, const std::string& tag) {
  Impl::WriteTx tx(*impl_);
  impl_->require_run(id);
  impl_->stmt("DELETE FROM run_tags WHERE run_id = ?1 AND tag = ?2").bind(1, id).bind(2, tag).run();
  if (impl_->db.getChanges() == 0) fail(impl_->path, "run {} has no tag \"{}\"", id, tag);
  tx.commit();
}

void RunStore::set_note(int64_t id, const std::string& note) {
  Impl::WriteTx tx(*impl_);
  impl_->stmt("UPDATE runs SET note = ?1 WHERE id = ?2").bind(1, note).bind(2, id).run();
  if (impl_->db.getChanges() == 0) fail(impl_->path, "no run {}", id);
  tx.commit();
}

void RunStore::in_transaction(const std::function<void()>& body) {
  Impl::WriteTx tx(*impl_);
  body();
  tx.commit();
}

std::string RunStore::integrity_check() {
  auto q = impl_->stmt("PRAGMA integrity_check");
  std::string out;
  while (q.step()) {
    if (!out.empty()) out.push_back('\n');
    out.append(q.text(0));
  }
  return out;
}

}  // namespace kvscope
