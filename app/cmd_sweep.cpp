// `kvscope sweep --spec FILE`: run (or list) the cells of a sweep into a run store, skipping cells
// already stored; `kvscope compare-cells A B`: do two stores hold the same cells with equal results?
// SIGINT/SIGTERM use main()'s handlers: the process ends at once with 130/143; the cell being
// stored is one uncommitted transaction, so nothing partial stays in the store.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "app/cli.h"
#include "app/store_options.h"
#include "storage/compare_cells.h"
#include "app/sweep_runner.h"
#include "core/sweep/sweep.h"
#include "core/util/error.h"
#include "storage/run_store.h"

namespace kvscope::cli {

namespace {

struct SweepArgs {
  std::string spec, db, shard = "0/1", note;
  std::vector<std::string> tags;
  int jobs = 1;
  bool list = false;
  bool reference_per_cell = false;
};

void list_cells(const SweepSpec& spec, const std::vector<SweepCell>& cells, int shards, const std::string& db) {
  std::set<std::string> done;
  std::error_code ec;
  if (std::filesystem::exists(db, ec)) {  // never create the store just to list
    RunStore store(db);
    for (auto& h : store.done_cell_hashes()) done.insert(h);
  }
  // Tab-separated, one header line: scripts cut columns (cut -f) or count lines.
  std::printf("index\tshard\thash\tkind\ttarget\tpolicy\tstatus\n");
  int n_done = 0;
  for (const auto& c : cells) {
    const bool d = done.count(c.hash) > 0;
    n_done += d;
    std::printf("%d\t%d\t%s\t%s\t%s\t%s\t%s\n", c.index, c.index % shards, c.hash.c_str(),
                c.kind == CellKind::Quantize ? "quantize" : "replay", c.target.c_str(),
                spec.methods[c.method].policy.name.c_str(), d ? "done" : "pending");
  }
  std::fflush(stdout);
  std::fprintf(stderr, "kvscope: %zu cells, %d done, %zu pending in %s\n", cells.size(), n_done, cells.size() - n_done,
               db.c_str());
}

}  // namespace

void register_sweep(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  auto* cmd = app.add_subcommand("sweep", "Run a grid of quantize/replay cells from a JSON spec (resumable, shardable)");
  cmd->add_option("--spec", a->spec, "Sweep spec (JSON; see README, Sweeps)")->required()->type_name("FILE");
  add_db_option(cmd, a->db);
  cmd->add_option("--jobs", a->jobs, "Cells run in parallel (each gets cores/jobs compute threads)")->capture_default_str();
  cmd->add_option("--shard", a->shard, "Run only cells with index % N == I (0-based), e.g. 2/4")->type_name("I/N");
  cmd->add_flag("--list", a->list, "Print the cells (tab-separated) and whether --db has them; run nothing");
  cmd->add_option("--tag", a->tags, "Extra tag on every stored run (runs are always tagged sweep:<name>)")->type_name("TAG");
  cmd->add_option("--note", a->note, "A note stored with every run")->type_name("TEXT");
  cmd->add_flag("--reference-per-cell", a->reference_per_cell,
                "Decode the fp16 reference in every replay cell instead of once per (model, workload) (less memory: "
                "the shared reference holds 4 x vocab bytes per scored step)");
  cmd->callback([a] {
    const auto [shard, shards] = parse_shard(a->shard);
    if (a->jobs < 1) fail("--jobs", "must be at least 1, got {}", a->jobs);
    const SweepSpec spec = load_sweep_spec(a->spec);
    const std::vector<SweepCell> cells = shard_cells(plan_cells(spec), shard, shards);
    const std::string db = resolve_db(a->db);
    if (a->list) {
      list_cells(spec, cells, shards, db);
      return;
    }
    SweepRunOptions o;
    o.db = db;
    o.jobs = a->jobs;
    o.shard = shard;
    o.shards = shards;
    o.tags = a->tags;
    o.note = a->note;
    o.share_reference = !a->reference_per_cell;
    const SweepRunResult r = run_sweep(spec, cells, o);
    std::fprintf(stderr, "kvscope: sweep %s: %d cells: %d run, %d already done, %d failed (%.1f s, %.2f cells/min); store %s\n",
                 spec.name.c_str(), r.cells, r.ran, r.skipped, r.failed, r.seconds,
                 r.seconds > 0 ? 60.0 * r.ran / r.seconds : 0.0, db.c_str());
    if (r.failed > 0) fail("sweep " + spec.name, "{} of {} cells failed (errors above); rerun to retry them", r.failed, r.cells);
  });
}

void register_compare_cells(CLI::App& app) {
  struct Args {
    std::string a, b;
    double rel_tol = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("compare-cells", "Check that two run stores hold the same sweep cells with equal results");
  cmd->add_option("a", args->a, "Run store")->required()->type_name("A.sqlite");
  cmd->add_option("b", args->b, "Run store")->required()->type_name("B.sqlite");
  cmd->add_option("--rel-tol", args->rel_tol, "Relative tolerance for numbers (default 0: exactly equal)")
      ->capture_default_str();
  cmd->callback([args] {
    const CellComparison c = compare_cell_stores(args->a, args->b, args->rel_tol);
    for (const auto& line : c.differences) std::printf("%s\n", line.c_str());
    if (c.differing == 0) std::printf("%d cells identical\n", c.cells);
    else std::printf("%d of %d cells differ\n", c.differing, c.cells);
    std::fflush(stdout);
    if (c.differing != 0 || c.cells == 0) {
      if (c.cells == 0) std::fprintf(stderr, "kvscope: neither store holds any sweep cells\n");
      std::exit(1);
    }
  });
}

}  // namespace kvscope::cli
