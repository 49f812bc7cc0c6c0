#pragma once
// Joins run stores (e.g. the shards of a sweep) into one. Every run is kept, under a new id; its
// uuid is kept too, so a run already in the target (merged before, or copied with the file) is
// skipped: merging the same file twice adds nothing. Dumps, policies and models are shared by
// content hash / name. The whole merge is one transaction: all sources go in, or none.
#include <cstdint>
#include <string>
#include <vector>

namespace kvscope {

struct MergeStats {
  int64_t runs_seen = 0;     // runs in the sources
  int64_t runs_added = 0;    // new in the target
  int64_t runs_skipped = 0;  // already there (same uuid)
};

// Sources are never written: one with an older schema is upgraded in a temporary copy.
MergeStats merge_run_stores(const std::vector<std::string>& sources, const std::string& into);

}  // namespace kvscope
