#pragma once
// Command line: each subcommand lives in its own app/cmd_*.cpp and registers itself here.
// A command's callback throws kvscope::Error for bad input; main prints it as one line and exits 1.
#include <CLI/CLI.hpp>

namespace kvscope::cli {

void register_synth(CLI::App& app);
void register_quantize(CLI::App& app);
void register_presets(CLI::App& app);
void register_gui(CLI::App& app);
void register_runs(CLI::App& app);
void register_export(CLI::App& app);
void register_merge(CLI::App& app);
void register_dump(CLI::App& app);
void register_generate(CLI::App& app);
void register_models(CLI::App& app);
void register_replay(CLI::App& app);
void register_smooth(CLI::App& app);
void register_sweep(CLI::App& app);
void register_compare_cells(CLI::App& app);
void register_report(CLI::App& app);

// Registers every subcommand (the one list of commands).
void register_all(CLI::App& app);

// `kvscope` with no arguments: the GUI on the built-in synthetic demo dump.
int run_gui_demo();

}  // namespace kvscope::cli
