// A database file handed to the run store (copied between machines, corrupted, or not SQLite at
// all): open (schema check + migrations), list, load runs, integrity check.
// (What the export makes of the runs it loads: fuzz_export.)
#include <unistd.h>

#include <filesystem>

#include "core/util/error.h"
#include "storage/run_store.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvscope::fuzz::write_scratch(data, size, "runs.sqlite");
  for (const char* side : {"-wal", "-shm", "-journal"}) ::unlink((path + side).c_str());
  try {
    kvscope::RunStoreOptions opts;
    opts.busy_timeout_ms = 0;
    kvscope::RunStore store(path, opts);
    std::vector<kvscope::StoredRun> runs;
    auto listing = store.list_runs();
    for (const auto& l : listing) {
      if (runs.size() >= 8) break;
      runs.push_back(store.load_run(l.id));
    }
    kvscope::fuzz::consume(runs);
    kvscope::fuzz::consume(store.integrity_check());
  } catch (const kvscope::Error&) {
  }
  return 0;
}
