#include "app/sweep_runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/quant/method_registry.h"
#include "core/dump/kv_dump.h"
#include "core/model/model.h"
#include "core/dump/dump_reader.h"
#include "core/quant/quantize_dump.h"
#include "core/quant/quantize_stream.h"
#include "core/replay/replay.h"
#include "core/tensor/compute_threads.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/parallel.h"
#include "python/policy_blocks.h"
#include "python/policy_script.h"
#include "storage/replay_record.h"
#include "storage/run_store.h"

namespace kvscope {

namespace {

using Clock = std::chrono::steady_clock;

std::string clock_text(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

// Dumps, models and workload slices shared by the workers: each is loaded once, on first use, and
// dropped when the last pending cell that needs it has finished. Model::forward and the tokenizers
// are const and keep no per-call state outside their arguments (the HF tokenizer's cache has its
// own mutex), and quantize_dump only reads the dump, so concurrent cells can share them.
class SharedInputs {
 public:
  SharedInputs(const SweepSpec& spec, const std::vector<const SweepCell*>& pending) : spec_(spec) {
    for (const SweepCell* c : pending) {
      if (c->kind == CellKind::Quantize) ++dump_uses_[c->dump];
      else ++model_uses_[c->model], ++slice_uses_[{c->model, c->workload}];
    }
    for (const auto& m : spec.methods)
      if (m.policy.method->needs_pre_rope_keys && m.policy.method->needs_pre_rope_keys(m.policy)) need_pre_rope_ = true;
  }

  std::shared_ptr<const KvDump> dump(int d) {
    std::lock_guard<std::mutex> lock(mutex_);  // loads are serialized: memory, not speed, is the limit
    auto& slot = dumps_[d];
    if (!slot) {
      DumpLoadOptions lo;
      lo.load_pre_rope = need_pre_rope_;
      slot = std::make_shared<const KvDump>(load_dump(spec_.dump_paths[d], lo));
    }
    return slot;
  }

  // The same dump memory-mapped, read a layer at a time (policies quantize_dump_streamed handles).
  std::shared_ptr<const DumpReader> reader(int d) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = readers_[d];
    if (!slot) slot = std::make_shared<const DumpReader>(spec_.dump_paths[d], DumpLoadOptions{.load_pre_rope = false});
    return slot;
  }

  std::shared_ptr<const LoadedModel> model(int m) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = models_[m];
    if (!slot) {
      auto lm = std::make_shared<LoadedModel>();
      lm->tok = load_tokenizer(spec_.model_dirs[m]);
      lm->model = Model::load(spec_.model_dirs[m]);
      slot = lm;
    }
    return slot;
  }

  std::shared_ptr<const std::vector<WorkloadSlice>> slices(int m, int w, const LoadedModel& lm) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = slices_[{m, w}];
    if (!slot) {
      auto s = load_workloads({spec_.workload_specs[w]}, *lm.tok, lm.model->config().max_position_embeddings);
      if (spec_.max_tokens > 0)  // as `kvscope replay --max-tokens`
        for (auto& sl : s)
          for (auto& it : sl.items) {
            if (it.target.size() > static_cast<size_t>(spec_.max_tokens)) it.target.resize(spec_.max_tokens);
            it.max_new = std::min(it.max_new, spec_.max_tokens);
          }
      slot = std::make_shared<const std::vector<WorkloadSlice>>(std::move(s));
    }
    return slot;
  }

  // The fp16 reference's predictions on (model, workload), decoded once for every method cell
  // (the reference does not depend on the policy; a cell's numbers are the same either way).
  std::shared_ptr<const BaseDistribution> base(int m, int w, const LoadedModel& lm, const std::vector<WorkloadSlice>& slices) {
    std::shared_ptr<BaseSlot> slot;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& s = bases_[{m, w}];
      if (!s) s = std::make_shared<BaseSlot>();
      slot = s;
    }
    std::call_once(slot->once, [&] { slot->base = std::make_shared<const BaseDistribution>(compute_base(*lm.model, slices)); });
    return slot->base;
  }

  void done(const SweepCell& c) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (c.kind == CellKind::Quantize) {
      if (--dump_uses_[c.dump] == 0) dumps_.erase(c.dump), readers_.erase(c.dump);
    } else {
      if (--slice_uses_[{c.model, c.workload}] == 0) slices_.erase({c.model, c.workload}), bases_.erase({c.model, c.workload});
      if (--model_uses_[c.model] == 0) models_.erase(c.model);
    }
  }

 private:
  const SweepSpec& spec_;
  bool need_pre_rope_ = false;
  std::mutex mutex_;
  std::map<int, int> dump_uses_, model_uses_;
  std::map<std::pair<int, int>, int> slice_uses_;
  std::map<int, std::shared_ptr<const KvDump>> dumps_;
  std::map<int, std::shared_ptr<const DumpReader>> readers_;
  std::map<int, std::shared_ptr<const LoadedModel>> models_;
  std::map<std::pair<int, int>, std::shared_ptr<const std::vector<WorkloadSlice>>> slices_;
  struct BaseSlot {
    std::once_flag once;
    std::shared_ptr<const BaseDistribution> base;
  };
  std::map<std::pair<int, int>, std::shared_ptr<BaseSlot>> bases_;
};

struct Progress {
  std::mutex mutex;
  std::FILE* log;
  int total, finished = 0, skipped = 0, failed = 0, ran = 0, started_with = 0;
  Clock::time_point t0 = Clock::now();

  void line(const std::string& what) {
    ++finished;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    const int now = finished - started_with;  // finished in this process: the rate for the ETA
    const int left = total - finished;
    const double eta = now > 0 ? elapsed / now * left : -1;
    std::fprintf(log, "[%d/%d] %s | skipped %d, failed %d | elapsed %s, ETA %s\n", finished, total, what.c_str(), skipped,
                 failed, clock_text(elapsed).c_str(), left == 0 ? "0:00" : clock_text(eta).c_str());
    std::fflush(log);
  }
};

// $KVSCOPE_SWEEP_TEST_DELAY_MS: wait this long inside each cell's write transaction, before the
// commit, so the kill tests can hit a sweep with a run half-written (tests/sweep only).
void test_delay() {
  static const int ms = [] {
    const char* v = std::getenv("KVSCOPE_SWEEP_TEST_DELAY_MS");
    return v ? std::atoi(v) : 0;
  }();
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// A policy script is planned per cell, for the cell's dump or model (and asked per block in replay).
ScriptTarget script_target(int layers, int kv_heads, int head_dim, int tokens, const KvDump* dump,
                           const std::string& model_id) {
  ScriptTarget t;
  t.model_id = model_id;
  t.layers = layers;
  t.kv_heads = kv_heads;
  t.head_dim = head_dim;
  t.tokens = tokens;
  t.dump = dump;
  t.source = dump ? "dump" : "replay";
  return t;
}

// Runs `add` in one transaction with the check that no process stored the cell first: never twice.
// False: another process stored it first.
bool store_once(RunStore& store, const std::string& cell_hash, const std::function<void()>& add) {
  bool stored = false;
  store.in_transaction([&] {
    if (store.has_done_cell(cell_hash)) return;
    add();
    test_delay();
    stored = true;
  });
  return stored;
}

bool run_quantize_cell(const SweepSpec& spec, const SweepCell& c, SharedInputs& inputs, RunStore& store, RunContext ctx) {
  const MethodVariant& mv = spec.methods[c.method];
  QuantizeOptions qo;
  qo.attn_queries = spec.attn_queries;
  QuantizeReport r;
  if (mv.script.empty() && quantizes_streamed(mv.policy)) {  // layer by layer from the mapped file: same report, one layer of memory
    auto reader = inputs.reader(c.dump);
    qo.attention = reader->has_q();
    r = quantize_dump_streamed(*reader, mv.policy, qo);
  } else {  // policy scripts read the whole dump (their hooks see every layer)
    auto dump = inputs.dump(c.dump);
    qo.attention = dump->has_q();
    Policy policy = mv.script.empty() ? mv.policy
                                      : plan_policy_script(mv.script, script_target(dump->shape.layers, dump->shape.kv_heads,
                                                                                    dump->shape.head_dim, dump->shape.tokens,
                                                                                    dump.get(), dump->meta.model_id));
    policy.name = mv.policy.name;
    r = quantize_dump(*dump, policy, qo);
  }
  r.dump_path = spec.dump_paths[c.dump];
  ctx.dump_hash = c.dump_hash;
  return store_once(store, c.hash, [&] { store.add_quantize_run(r, ctx); });
}

bool run_replay_cell(const SweepSpec& spec, const SweepCell& c, SharedInputs& inputs, bool share_reference, RunStore& store,
                     const RunContext& ctx) {
  const MethodVariant& mv = spec.methods[c.method];
  const auto t = Clock::now();
  auto lm = inputs.model(c.model);
  auto slices = inputs.slices(c.model, c.workload, *lm);
  std::shared_ptr<const BaseDistribution> base;
  if (share_reference) base = inputs.base(c.model, c.workload, *lm, *slices);
  ReplayOptions ro;
  ro.base = base.get();
  Policy policy = mv.policy;
  std::unique_ptr<ScriptBlockHook> hook;
  if (!mv.script.empty()) {
    const ModelConfig& cfg = lm->model->config();
    const ScriptTarget target = script_target(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, 0, nullptr, spec.models[c.model]);
    policy = plan_policy_script(mv.script, target);
    policy.name = mv.policy.name;
    hook = ScriptBlockHook::create(mv.script, policy, target);
    ro.block_hook = hook.get();
  }
  const std::vector<SliceMetrics> metrics = run_replay(*lm->model, *lm->tok, *slices, policy, ro);
  ReplayRecord rec = replay_record(policy, policy.name, spec.models[c.model], lm->model->config(),
                                   spec.workloads[c.workload], metrics,
                                   std::chrono::duration<double>(Clock::now() - t).count());
  rec.ctx.tags = ctx.tags;
  rec.ctx.note = ctx.note;
  rec.ctx.cell_hash = ctx.cell_hash;
  return store_once(store, c.hash, [&] { store.add_replay_run(rec.identity, rec.ctx); });
}

// The cells not yet done in the database (created / migrated here once, before the workers open theirs).
std::vector<const SweepCell*> pending_cells(const std::string& db, const std::vector<SweepCell>& cells) {
  RunStore store(db);
  const auto done_list = store.done_cell_hashes();
  const std::set<std::string> done(done_list.begin(), done_list.end());
  std::vector<const SweepCell*> pending;
  for (const auto& c : cells)
    if (!done.count(c.hash)) pending.push_back(&c);
  return pending;
}

}  // namespace

std::vector<SweepCell> shard_cells(const std::vector<SweepCell>& all, int shard, int shards) {
  if (shards < 1 || shard < 0 || shard >= shards) fail("--shard", "{}/{} must satisfy 0 <= I < N", shard, shards);
  std::vector<SweepCell> out;
  for (const auto& c : all)
    if (c.index % shards == shard) out.push_back(c);
  return out;
}

SweepRunResult run_sweep(const SweepSpec& spec, const std::vector<SweepCell>& cells, const SweepRunOptions& opts) {
  if (opts.jobs < 1) fail("--jobs", "must be at least 1, got {}", opts.jobs);
  const auto t0 = Clock::now();
  SweepRunResult result;
  result.cells = static_cast<int>(cells.size());

  std::vector<std::string> tags = {"sweep:" + spec.name};
  for (const auto& t : opts.tags)
    if (t != tags[0]) tags.push_back(t);

  const std::vector<const SweepCell*> pending = pending_cells(opts.db, cells);
  result.skipped = result.cells - static_cast<int>(pending.size());
  const int jobs = std::max(1, std::min<int>(opts.jobs, static_cast<int>(pending.size())));
  // Each cell's compute threads share the cores with the other jobs. Set before the first model
  // load or attention metric fixes BLAS's thread count (configure_compute_threads).
  const int cores = available_cpus();  // the task's allocation under Slurm, not the whole node
  set_worker_threads(std::max(1, cores / jobs));
  // Matrix products single-threaded for the whole sweep: OpenBLAS's sums differ in the last bits
  // with its thread count (measured: replay perplexities 1e-7 apart between --jobs 1 and 2 on
  // tinystories-qwen2-4L), and a cell's numbers must not depend on --jobs or the node's cores.
  // The cores are used by the jobs and by core/'s per-head parallel_for (order-independent sums).
  ScopedBlasThreads blas(1);
  std::fprintf(opts.log, "kvscope: sweep %s: %d cells%s, %d already in %s, %d to run (%d job%s x %d thread%s)\n",
               spec.name.c_str(), result.cells,
               opts.shards > 1 ? fmt::format(" in shard {}/{}", opts.shard, opts.shards).c_str() : "", result.skipped,
               opts.db.c_str(), static_cast<int>(pending.size()), jobs, jobs == 1 ? "" : "s", worker_threads(),
               worker_threads() == 1 ? "" : "s");
  std::fflush(opts.log);

  SharedInputs inputs(spec, pending);
  Progress progress;
  progress.log = opts.log;
  progress.total = result.cells;
  progress.finished = progress.started_with = progress.skipped = result.skipped;
  std::atomic<size_t> next{0};

  auto worker = [&] {
    std::unique_ptr<RunStore> store;
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= pending.size()) return;
      const SweepCell& c = *pending[i];
      const std::string label = fmt::format("cell {} {} {}", c.index, spec.methods[c.method].policy.name, c.target);
      const auto tc = Clock::now();
      std::string error;
      bool stored = false;
      try {
        if (!store) store = std::make_unique<RunStore>(opts.db);  // one connection per worker
        RunContext ctx;
        ctx.tags = tags;
        ctx.note = opts.note;
        ctx.cell_hash = c.hash;
        stored = c.kind == CellKind::Quantize ? run_quantize_cell(spec, c, inputs, *store, ctx)
                                              : run_replay_cell(spec, c, inputs, opts.share_reference, *store, ctx);
      } catch (const std::exception& e) {
        error = e.what();
      }
      inputs.done(c);
      const double secs = std::chrono::duration<double>(Clock::now() - tc).count();
      std::lock_guard<std::mutex> lock(progress.mutex);
      if (!error.empty()) {
        ++progress.failed;
        std::fprintf(opts.log, "kvscope: %s failed: %s\n", label.c_str(), error.c_str());
        progress.line(label + " FAILED");
      } else if (!stored) {
        ++progress.skipped;
        progress.line(label + " already stored by another process");
      } else {
        ++progress.ran;
        progress.line(fmt::format("{} ({:.2f} s)", label, secs));
      }
    }
  };
  std::vector<std::thread> pool;
  for (int j = 1; j < jobs; ++j) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();

  result.ran = progress.ran;
  result.failed = progress.failed;
  result.skipped = progress.skipped;
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return result;
}

}  // namespace kvscope
