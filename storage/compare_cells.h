#pragma once
// Compares two run stores cell for cell (`kvscope compare-cells`): the same set of sweep cell
// hashes, each stored exactly once in each, with equal results. Compared: kind, method, policy,
// dump hash, workload, shape, every summary column, every per-head and attention metric, the
// rd points and the replay metrics. Not compared: ids, uuids, times, origin, tags, notes, paths
// and model names as written, and what measures time rather than the result (wall_seconds,
// calibration_seconds, and the replay metrics decode_tokens_per_s, ref_decode_tokens_per_s,
// prefill_latency_ms, calibration_cost_s). Runs without a cell hash are not cells and are ignored.
#include <cstdio>
#include <string>
#include <vector>

namespace kvscope {

struct CellComparison {
  int cells = 0;          // distinct cell hashes in either store
  int differing = 0;      // cells missing from one side, duplicated, or with different results
  std::vector<std::string> differences;  // one line each, grouped by cell
};

// rel_tol = 0: numbers must be equal (NaN equals NaN); else |a - b| <= rel_tol * max(|a|, |b|).
CellComparison compare_cell_stores(const std::string& a, const std::string& b, double rel_tol = 0);

}  // namespace kvscope
