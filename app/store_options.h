#pragma once
// The run-store flags shared by commands that produce runs (quantize, replay, sweep):
//   --db FILE   the run store (default: $XDG_DATA_HOME/kvscope/kvscope.sqlite)
//   --no-store  do not keep this run
//   --tag TAG   (repeatable) and --note TEXT, stored with the run
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/quant/report.h"
#include "storage/run_store.h"

namespace kvscope::cli {

struct StoreOptions {
  std::string db;  // "" = default_db_path()
  bool no_store = false;
  std::vector<std::string> tags;
  std::string note;
};

void add_store_options(CLI::App* cmd, StoreOptions& opts);
// Just --db, for commands that read or edit the store (runs, export).
void add_db_option(CLI::App* cmd, std::string& db);
// The --db value, or the default path.
std::string resolve_db(const std::string& db);

// Stores the run unless --no-store; prints "kvscope: stored run N in FILE" on stderr.
// Returns the run id, or nullopt when not stored. Errors name the database.
std::optional<int64_t> maybe_store_quantize_run(const StoreOptions& opts, const QuantizeReport& report,
                                                const RunContext& ctx = {});

}  // namespace kvscope::cli
