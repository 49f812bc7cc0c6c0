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
#include "storage/export.h"
#include "storage/run_store.h"

namespace kvscope::cli {
namespace {

// Temp file beside the target, then rename: a failed export never leaves a half-written file.
void write_atomically(const std::string& path, const std::string& text) {
  std::random_device rd;
  const std::string tmp = path + ".tmp-" + std::to_string(rd());
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) fail(path, "cannot write: {}", std::strerror(errno));
    f << text;
    f.flush();
    if (!f) {
      std::filesystem::remove(tmp);
      fail(path, "write failed: {}", std::strerror(errno));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    fail(path, "cannot write: {}", ec.message());
  }
}

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
      write_atomically(args->out, text);
    }
  });
}

}  // namespace kvscope::cli
