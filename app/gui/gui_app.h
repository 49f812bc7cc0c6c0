#pragma once
// The GUI shell: one GLFW window with a menu bar, a sidebar (sources + policy editor), the
// central views (heatmap, rate-distortion, attention cosine, runs), a jobs panel and a status bar.
#include <string>
#include <vector>

namespace kvscope::gui {

struct GuiOptions {
  bool demo = true;            // open the built-in synthetic dump (unless --open names dumps)
  int demo_tokens = 4096;
  std::string db;              // run database to show (needs the run store)
  std::vector<std::string> open;  // dumps to open
  std::string script;          // scripted UI actions (see script.h)
  std::string screenshot;      // write a PNG of the last frame, then exit
  int frames = 0;              // exit after this many frames (0 = run until closed / script quits)
  int width = 0, height = 0;   // window size (0 = from settings)
};

int run_gui(const GuiOptions& opts);

}  // namespace kvscope::gui
