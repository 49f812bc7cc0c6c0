#include "app/cli.h"

namespace kvscope::cli {

void register_all(CLI::App& app) {
  (void)app;  // subcommands are added here as they land
}

int run_gui_demo() { return 0; }

}  // namespace kvscope::cli
