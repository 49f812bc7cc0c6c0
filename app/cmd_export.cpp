// kvscope export: stored runs as a table for a paper (LaTeX), a README (Markdown), a
// spreadsheet (CSV) or a script (JSON).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "app/cli.h"
#include "app/store_options.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "storage/export.h"
#include "storage/run_store.h"

namespace kvscope::cli {
namespace {


}  // namespace

void register_export(CLI::App& app) {
  struct Args {
    std::string db, format, table = "summary", out;
    std::vector<int64_t> runs;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("export", "Export stored runs as CSV, Markdown, LaTeX or JSON tables");
  add_db_option(cmd, args->db);
  cmd->add_option("--run", args->runs, "Run ids, comma-separated (compare: deltas against the first)")
      ->required()
      ->delimiter(',');
  cmd->add_option("--format", args->format, "csv (RFC 4180), md (GitHub), tex (booktabs), json")
      ->required()
      ->check(CLI::IsMember({"csv", "md", "tex", "json"}));
  cmd->add_option("--table", args->table, "summary, per-layer, per-head or compare")
      ->capture_default_str()
      ->check(CLI::IsMember({"summary", "per-layer", "per-head", "compare"}));
  cmd->add_option("--out", args->out, "Write here instead of stdout")->type_name("FILE");
  cmd->callback([args] {
    RunStore store(resolve_db(args->db));
    std::vector<StoredRun> runs;
    for (int64_t id : args->runs) runs.push_back(store.load_run(id));
    const std::string text = format_table(make_table(args->table, runs), args->format);
    if (args->out.empty()) {
      std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
      write_file_atomic(args->out, text);
    }
  });
}

}  // namespace kvscope::cli
