#include "app/cli.h"

namespace kvscope::cli {

void register_all(CLI::App& app) {
  register_gui(app);
}

}  // namespace kvscope::cli
