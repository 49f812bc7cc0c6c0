#include "app/store_options.h"

#include <cstdio>

namespace kvscope::cli {

void add_db_option(CLI::App* cmd, std::string& db) {
  cmd->add_option("--db", db, "Run store (default: $XDG_DATA_HOME/kvscope/kvscope.sqlite)")->type_name("FILE");
}

void add_store_options(CLI::App* cmd, StoreOptions& opts) {
  add_db_option(cmd, opts.db);
  cmd->add_flag("--no-store", opts.no_store, "Do not keep this run in the run store");
  cmd->add_option("--tag", opts.tags, "Tag the stored run (repeatable)")->type_name("TAG");
  cmd->add_option("--note", opts.note, "A note stored with the run")->type_name("TEXT");
}

std::string resolve_db(const std::string& db) { return db.empty() ? default_db_path() : db; }

std::optional<int64_t> maybe_store_quantize_run(const StoreOptions& opts, const QuantizeReport& report,
                                                const RunContext& ctx) {
  if (opts.no_store) return std::nullopt;
  RunContext full = ctx;
  full.tags.insert(full.tags.end(), opts.tags.begin(), opts.tags.end());
  if (!opts.note.empty()) full.note = full.note.empty() ? opts.note : full.note + "\n" + opts.note;
  RunStore store(resolve_db(opts.db));
  const int64_t id = store.add_quantize_run(report, full);
  std::fprintf(stderr, "kvscope: stored run %lld in %s\n", static_cast<long long>(id), store.path().c_str());
  return id;
}

}  // namespace kvscope::cli
