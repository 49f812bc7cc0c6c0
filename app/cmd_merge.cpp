// kvscope merge: join run stores (e.g. the shards of a sweep) into one.
#include <cstdio>

#include "app/cli.h"
#include "storage/merge.h"

namespace kvscope::cli {

void register_merge(CLI::App& app) {
  struct Args {
    std::vector<std::string> sources;
    std::string into;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "merge", "Copy every run of the given stores into one (runs already there, by uuid, are skipped)");
  cmd->add_option("sources", args->sources, "Run stores to read (never modified)")->required()->type_name("FILE");
  cmd->add_option("--into", args->into, "Run store to add them to (created if missing)")->required()->type_name("FILE");
  cmd->callback([args] {
    const MergeStats s = merge_run_stores(args->sources, args->into);
    std::fprintf(stderr, "kvscope: merged %zu store(s) into %s: %lld run(s) added, %lld already there\n",
                 args->sources.size(), args->into.c_str(), static_cast<long long>(s.runs_added),
                 static_cast<long long>(s.runs_skipped));
  });
}

}  // namespace kvscope::cli
