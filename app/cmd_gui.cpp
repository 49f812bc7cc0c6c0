// `kvscope gui`: the desktop app; `kvscope` alone runs it on the built-in demo dump.
#include "app/cli.h"
#include "app/gui/gui_app.h"

namespace kvscope::cli {

void register_gui(CLI::App& app) {
  auto opts = std::make_shared<gui::GuiOptions>();
  CLI::App* cmd = app.add_subcommand("gui", "Open the GUI (heatmaps, RD and attention plots, live policy tuning)");
  cmd->add_flag("--demo", opts->demo, "Open the built-in synthetic Qwen2.5-0.5B-shaped dump (default when nothing is opened)");
  cmd->add_option("--demo-tokens", opts->demo_tokens, "Tokens in the synthetic demo dump")->check(CLI::Range(16, 1 << 16));
  cmd->add_option("--db", opts->db, "Run database to show in the runs table and RD view");
  cmd->add_option("--open", opts->open, "KV dump(s) to open (.safetensors)");
  cmd->add_option("--script", opts->script, "Run UI actions from this file (see app/gui/script.h)")->check(CLI::ExistingFile);
  cmd->add_option("--screenshot", opts->screenshot, "Write a PNG of the last frame, then exit");
  cmd->add_option("--frames", opts->frames, "Exit after this many frames")->check(CLI::NonNegativeNumber);
  cmd->add_option("--width", opts->width, "Window width in pixels")->check(CLI::Range(320, 8192));
  cmd->add_option("--height", opts->height, "Window height in pixels")->check(CLI::Range(240, 8192));
  cmd->callback([opts] {
    gui::GuiOptions o = *opts;
    if (!o.open.empty()) o.demo = false;
    int rc = gui::run_gui(o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

int run_gui_demo() {
  gui::GuiOptions o;
  return gui::run_gui(o);
}

}  // namespace kvscope::cli
