#pragma once
// Runs the cells of a sweep into a run store: skips cells the store already has (status 'done',
// same cell hash), runs the rest on `jobs` worker threads, stores each finished cell as one run in
// one transaction, reports progress. A failing cell is reported and not stored; the others go on.
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/sweep/sweep.h"

namespace kvscope {

struct SweepRunOptions {
  std::string db;          // the run store (created if missing)
  int jobs = 1;            // worker threads pulling cells
  int shard = 0, shards = 1;  // run cells with index % shards == shard
  std::vector<std::string> tags;  // besides "sweep:<name>"
  std::string note;
  std::FILE* log = stderr;  // progress lines
  // Replay cells: decode the fp16 reference once per (model, workload) and compare every method cell
  // with it (the cells' numbers are the same either way); false: each cell decodes it again.
  bool share_reference = true;
};

struct SweepRunResult {
  int cells = 0;    // in this shard
  int skipped = 0;  // already in the store
  int ran = 0;      // stored now
  int failed = 0;
  double seconds = 0;
};

// The cells of one shard, in grid order.
std::vector<SweepCell> shard_cells(const std::vector<SweepCell>& all, int shard, int shards);

SweepRunResult run_sweep(const SweepSpec& spec, const std::vector<SweepCell>& cells, const SweepRunOptions& opts);

}  // namespace kvscope
