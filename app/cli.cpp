#include "app/cli.h"

namespace kvscope::cli {

void register_all(CLI::App& app) {
  register_synth(app);
  register_quantize(app);
  register_presets(app);
  register_runs(app);
  register_export(app);
  register_merge(app);
  register_dump(app);
  register_generate(app);
  register_models(app);
  register_replay(app);
  register_smooth(app);
  register_sweep(app);
  register_compare_cells(app);
  register_report(app);
  register_gui(app);
}

}  // namespace kvscope::cli
