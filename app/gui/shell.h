#pragma once
// What the GUI's pieces share: the workspace (data and jobs, no ImGui), the settings and the UI
// state (which view, metric, colormap, the sidebar's inputs, pending figures, the script being
// run). Each tab controller (tab_*.cpp), sidebar panel (panel_*.cpp) and script verb
// (script_verbs.cpp) is a function of a Shell&; the window (window.h) draws them each frame.
#include <imgui.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "app/gui/gui_app.h"
#include "app/gui/perf_probe.h"
#include "app/gui/script.h"
#include "app/gui/settings.h"
#include "app/gui/workspace.h"
#include "core/model/discovery.h"
#include "views/heatmap_view.h"
#include "views/kld_cdf_model.h"
#include "views/plot_view.h"
#include "views/policy_editor_view.h"
#include "views/report_grids.h"
#include "views/runs_table_view.h"

namespace kvscope::gui {

class Window;

inline constexpr const char* kViews[] = {"heatmap", "rd", "attention", "runs"};
inline constexpr const char* kViewTitles[] = {"Heatmap", "Rate-distortion", "Attention cosine", "Runs"};

views::HeadMetric metric_from_name(const std::string& s);
const char* metric_key(views::HeadMetric m);

struct FigureRequest {
  std::string view, path;
  int w = 0, h = 0;
};

// A script being run (script.h): where it is, what it waits for, the mouse it injects.
struct ScriptRun {
  std::vector<ScriptAction> actions;
  size_t pos = 0;
  int wait_frames = 0;
  std::optional<Workspace::Clock::time_point> wait_jobs_since;
  bool failed = false;
  bool quit = false;
  std::optional<ImVec2> inject_pos;
  int inject_button = -1;  // held for one frame
  bool inject_release = false;
  bool active() const { return !actions.empty(); }
  bool done() const { return pos >= actions.size(); }
};

struct Shell {
  explicit Shell(const GuiOptions& o);

  GuiOptions opts;
  Settings settings;
  std::string settings_path;
  Workspace ws;
  Window* window = nullptr;  // set while the window exists

  // Views.
  int view = 0;
  bool view_forced = false;  // select the tab once (menu / script / open run)
  views::HeadMetric metric = views::HeadMetric::Nmse;
  bool log_scale = true;
  views::Colormap cmap = views::Colormap::Viridis;
  bool show_values = false;
  views::GridLayout layout_k, layout_v;
  views::RdMetric rd_metric = views::RdMetric::KNmse;
  bool attn_nmse = false;
  views::RunsTableState runs_state;
  // The runs tab's KLD CDF: distributions of the selected runs, rebuilt when the selection changes.
  std::set<int64_t> kld_ids;
  std::vector<views::KldDistribution> kld_runs;

  // Sidebar inputs.
  std::string db_input;
  std::vector<ModelEntry> models;  // discover_models(): HF cache and $KVSCOPE_MODEL_PATH
  std::string capture_text;        // text file to capture a dump on (empty: a built-in passage)
  int capture_tokens = 512;
  std::string replay_spec = "passkey:len=256,depth=0.5,n=2";  // workload for Replay (see docs/REPLAY.md)
  std::vector<std::string> preset_names;
  std::string policy_path = "policy.json";
  views::OverrideDraft override_draft;

  // Dialogs and figures.
  bool open_dump_popup = false;
  std::string open_path;
  bool show_hint = false;
  std::optional<FigureRequest> figure;
  FigureRequest figure_draft{"heatmap", "kvscope-heatmap.png", 1000, 700};
  bool figure_popup = false;
  bool figure_drawn = false;
  std::string screenshot_path;

  ScriptRun script;
  PerfProbe perf;
  double fps = 0;

  void show_view(int i) {
    view = i;
    view_forced = true;
  }
  void ask_figure(const std::string& v) {
    figure_draft.view = v;
    figure_draft.path = "kvscope-" + v + ".png";
    figure_popup = true;
  }
  void error(const std::string& msg) { ws.error(msg); }
  void open_run(int64_t id) {
    if (ws.open_run(id)) show_view(0);
  }
};

// Tab controllers (one file each): draw the view, turn the user's intent into workspace calls.
void heatmap_tab(Shell& s);
void heatmap_pair(Shell& s, ImVec2 size, bool interactive);  // K and V maps + colour bar (also for figures)
void rd_tab(Shell& s);
views::PlotData rd_data(const Shell& s);
void attention_tab(Shell& s);
views::PlotData attention_data(Shell& s);
void runs_tab(Shell& s);

// Sidebar panels (one file each) and the bottom of the window.
void sources_panel(Shell& s);  // the open dump and the models found (capture, replay)
void store_panel(Shell& s);    // the run store
void policy_panel(Shell& s);   // the policy editor
void jobs_panel(Shell& s, ImVec2 size);
void status_bar(Shell& s);
void dialogs(Shell& s);        // open dump, save figure, error

}  // namespace kvscope::gui
