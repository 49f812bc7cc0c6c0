// The export path of `kvscope report` / `runs show`: runs loaded from a database file (copied between
// machines, corrupted or hand-edited) turned into every table in every format. Beyond "only
// kvscope::Error": the JSON outputs must parse (scripts read them), whatever strings and numbers
// (NaN, inf, control characters, invalid UTF-8) the database held.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "storage/export.h"
#include "storage/run_store.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void must_parse(const std::string& text, const char* what) {
  if (!nlohmann::json::accept(text)) {
    std::fprintf(stderr, "%s is not valid JSON:\n%s\n", what, text.c_str());
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvscope::fuzz::write_scratch(data, size, "runs.sqlite");
  for (const char* side : {"-wal", "-shm", "-journal"}) ::unlink((path + side).c_str());
  std::vector<kvscope::StoredRun> runs;
  std::vector<kvscope::RunListing> listing;
  try {
    kvscope::RunStoreOptions opts;
    opts.busy_timeout_ms = 0;
    opts.read_only = true;
    kvscope::RunStore store(path, opts);
    listing = store.list_runs();
    for (const auto& l : listing) {
      if (runs.size() >= 4) break;
      runs.push_back(store.load_run(l.id));
    }
  } catch (const kvscope::Error&) {
    return 0;
  }
  for (const auto& run : runs) must_parse(kvscope::run_to_json(run), "run_to_json");
  std::vector<kvscope::Table> tables = {kvscope::listing_table(listing)};
  for (const char* name : {"summary", "per-layer", "per-head", "compare"}) tables.push_back(kvscope::make_table(name, runs));
  for (const auto& t : tables) {
    for (const char* format : {"csv", "md", "tex", "json", "text"}) {
      const std::string out = kvscope::format_table(t, format);
      if (std::string(format) == "json") must_parse(out, "to_json");
      kvscope::fuzz::consume(out);
    }
  }
  return 0;
}
