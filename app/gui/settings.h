#pragma once
// GUI settings kept between sessions in $XDG_CONFIG_HOME/kvscope/settings.json
// (~/.config/kvscope when unset): theme, UI scale, window size, last view and heatmap choices,
// recent dumps and databases. A missing or unreadable file gives the defaults (and first_run).
#include <string>
#include <vector>

namespace kvscope::gui {

struct Settings {
  bool dark = true;
  float ui_scale = 1.0f;
  int window_w = 1600, window_h = 1000;
  float sidebar_w = 340, jobs_h = 110;  // layout, in unscaled pixels
  std::string view = "heatmap";
  std::string metric = "nmse";
  std::string colormap = "viridis";
  bool log_scale = true;
  std::vector<std::string> recent_dumps, recent_dbs;
  bool first_run = true;  // no settings file existed: show the what-to-do-next hint
};

std::string settings_path();  // the file above
Settings load_settings(const std::string& path);
// Writes atomically (temp + rename); creates the directory. Throws Error naming the file.
void save_settings(const std::string& path, const Settings& s);
// Moves `entry` to the front, drops duplicates, keeps at most `limit`.
void remember_recent(std::vector<std::string>& list, const std::string& entry, size_t limit = 8);

}  // namespace kvscope::gui
