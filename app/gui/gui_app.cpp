// The GUI shell: builds the Shell (workspace + UI state), opens the window and runs the frame loop.
// The pieces it lays out live one per file: tab_*.cpp (views), panel_*.cpp (sidebar, jobs, status),
// dialogs.cpp, script_verbs.cpp (the script interpreter), window.cpp (GLFW/GL/fonts/pacing),
// perf_probe.cpp (frame and latency measurements) and workspace.cpp (data and jobs, no ImGui).
#include "app/gui/gui_app.h"

#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "app/gui/png_capture.h"
#include "app/gui/script_verbs.h"
#include "app/gui/shell.h"
#include "app/gui/window.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "core/util/json_text.h"

namespace kvscope::gui {

using views::HeadMetric;
using Clock = std::chrono::steady_clock;

HeadMetric metric_from_name(const std::string& s) {
  if (s == "mse") return HeadMetric::Mse;
  if (s == "cos") return HeadMetric::CosDistance;
  if (s == "attn") return HeadMetric::AttnCosDistance;
  if (s == "bits") return HeadMetric::BitsPerElement;
  return HeadMetric::Nmse;
}

const char* metric_key(HeadMetric m) {
  switch (m) {
    case HeadMetric::Mse: return "mse";
    case HeadMetric::CosDistance: return "cos";
    case HeadMetric::AttnCosDistance: return "attn";
    case HeadMetric::BitsPerElement: return "bits";
    default: return "nmse";
  }
}

Shell::Shell(const GuiOptions& o)
    : opts(o),
      ws(WorkspaceHooks{
          .dump_opened = [this](const std::string& p) { remember_recent(settings.recent_dumps, p); },
          .store_opened = [this](const std::string& p) { remember_recent(settings.recent_dbs, p); },
          .first_rows = [this](uint64_t gen) { perf.first_rows(gen); },
          .tensor_result = [this](uint64_t gen) { perf.tensor_result(gen); },
          .attention_result = [this](uint64_t gen) { perf.attention_result(gen); },
          .committed = [this](uint64_t gen) { perf.committed(gen); },
      }) {}

namespace {

void menu_bar(Shell& s) {
  if (!ImGui::BeginMenuBar()) return;
  if (ImGui::BeginMenu("File")) {
    if (ImGui::MenuItem("Open dump...")) s.open_dump_popup = true;
    if (ImGui::MenuItem("Open built-in demo")) s.ws.open_demo(s.opts.demo_tokens);
    if (ImGui::BeginMenu("Recent dumps", !s.settings.recent_dumps.empty())) {
      for (const auto& r : s.settings.recent_dumps)
        if (ImGui::MenuItem(r.c_str())) s.ws.open_dump(r);
      ImGui::EndMenu();
    }
    ImGui::Separator();
    if (ImGui::MenuItem("Save heatmap figure...")) s.ask_figure("heatmap");
    if (ImGui::MenuItem("Save RD figure...")) s.ask_figure("rd");
    if (ImGui::MenuItem("Save attention figure...")) s.ask_figure("attention");
    ImGui::Separator();
    if (ImGui::MenuItem("Quit")) s.window->request_close();
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("View")) {
    for (int i = 0; i < 4; ++i)
      if (ImGui::MenuItem(kViewTitles[i], nullptr, s.view == i)) s.show_view(i);
    ImGui::Separator();
    if (ImGui::MenuItem("Dark theme", nullptr, s.settings.dark)) {
      s.settings.dark = !s.settings.dark;
      s.window->apply_style(s.settings.dark, s.settings.ui_scale);
    }
    float scale = s.settings.ui_scale;
    if (ImGui::SliderFloat("UI scale", &scale, 0.75f, 2.0f, "%.2f")) s.settings.ui_scale = scale;
    if (ImGui::IsItemDeactivatedAfterEdit()) s.window->apply_style(s.settings.dark, s.settings.ui_scale);
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("Help")) {
    if (ImGui::MenuItem("What to do next")) s.show_hint = true;
    ImGui::EndMenu();
  }
  ImGui::EndMenuBar();
}

void sidebar(Shell& s, ImVec2 size) {
  ImGui::BeginChild("sidebar", size, true);
  if (ImGui::CollapsingHeader("Sources", ImGuiTreeNodeFlags_DefaultOpen)) {
    sources_panel(s);
    ImGui::Separator();
    store_panel(s);
  }
  if (ImGui::CollapsingHeader("Policy", ImGuiTreeNodeFlags_DefaultOpen)) policy_panel(s);
  ImGui::EndChild();
}

void first_run_hint(Shell& s) {
  if (!s.show_hint) return;
  ImGui::PushStyleColor(ImGuiCol_ChildBg, IM_COL32(40, 70, 120, 200));
  ImGui::BeginChild("hint", ImVec2(0, ImGui::GetTextLineHeightWithSpacing() * 4.6f), true);
  // The welcome text describes the demo; once the user opened their own dump it says what is shown instead.
  const std::string& name = s.ws.dump_name();
  const bool demo = name.rfind("demo", 0) == 0;
  const std::string what = demo ? "This is a built-in synthetic Qwen2.5-0.5B-shaped KV dump with planted outlier K heads. "
                                : "This is " + (name.empty() ? std::string("your dump") : name) + ". ";
  ImGui::TextWrapped(
      "Welcome to kvscope. %sEach cell is one (layer, KV head) under the policy on the left. Hover a cell for exact "
      "values, click it to drill into the head, right-click to keep it in fp16. Move the sliders on the left: "
      "everything re-quantizes in the background. File > Open dump loads another (capture one with "
      "`kvscope dump <model>`).",
      what.c_str());
  if (ImGui::SmallButton("Got it")) s.show_hint = false;
  ImGui::EndChild();
  ImGui::PopStyleColor();
}

void central(Shell& s, ImVec2 size) {
  ImGui::BeginChild("central", size, false);
  first_run_hint(s);
  if (ImGui::BeginTabBar("views")) {
    for (int i = 0; i < 4; ++i) {
      ImGuiTabItemFlags f = (s.view_forced && s.view == i) ? ImGuiTabItemFlags_SetSelected : 0;
      if (ImGui::BeginTabItem(kViewTitles[i], nullptr, f)) {
        if (!s.view_forced) s.view = i;
        switch (i) {
          case 0: heatmap_tab(s); break;
          case 1: rd_tab(s); break;
          case 2: attention_tab(s); break;
          case 3: runs_tab(s); break;
        }
        ImGui::EndTabItem();
      }
    }
    s.view_forced = false;
    ImGui::EndTabBar();
  }
  ImGui::EndChild();
}

// A figure request draws only that plot, at its size, over the window's top-left corner.
void figure_overlay(Shell& s) {
  ImGui::SetNextWindowPos(ImVec2(0, 0));
  ImGui::SetNextWindowSize(ImVec2(static_cast<float>(s.figure->w), static_cast<float>(s.figure->h)));
  ImGuiWindowFlags flags = ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoSavedSettings | ImGuiWindowFlags_NoMove |
                           ImGuiWindowFlags_NoFocusOnAppearing;
  ImGui::SetNextWindowBgAlpha(1.0f);
  ImGui::Begin("##figure", nullptr, flags);
  ImVec2 avail = ImGui::GetContentRegionAvail();
  if (s.figure->view == "heatmap") heatmap_pair(s, avail, false);
  else if (s.figure->view == "rd") views::draw_plot("rd_fig", rd_data(s), avail);
  else views::draw_plot("attn_fig", attention_data(s), avail);
  ImGui::End();
  s.figure_drawn = true;
}

void frame(Shell& s) {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(vp->WorkPos);
  ImGui::SetNextWindowSize(vp->WorkSize);
  ImGuiWindowFlags flags = ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_MenuBar |
                           ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoSavedSettings |
                           ImGuiWindowFlags_NoBackground;  // the frame is cleared to WindowBg (Window::end_frame)
  ImGui::PushStyleVar(ImGuiStyleVar_WindowPadding, ImVec2(6, 6));
  ImGui::Begin("kvscope", nullptr, flags);
  ImGui::PopStyleVar();
  menu_bar(s);
  float sc = s.settings.ui_scale;
  float status_h = ImGui::GetFrameHeightWithSpacing();
  ImVec2 avail = ImGui::GetContentRegionAvail();
  // Sidebar width and jobs panel height are dragged with the splitters and kept in the settings.
  float side_w = std::clamp(s.settings.sidebar_w * sc, 200.0f, std::max(200.0f, avail.x * 0.6f));
  float jobs_h = std::clamp(s.settings.jobs_h * sc, 60.0f, std::max(60.0f, avail.y * 0.5f));
  float main_h = avail.y - jobs_h - status_h;
  float gap = ImGui::GetStyle().ItemSpacing.x;
  sidebar(s, ImVec2(side_w, main_h));
  ImGui::SameLine(0, 0);
  ImGui::InvisibleButton("##vsplit", ImVec2(gap, main_h));
  if (ImGui::IsItemHovered() || ImGui::IsItemActive()) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeEW);
  if (ImGui::IsItemActive()) s.settings.sidebar_w += ImGui::GetIO().MouseDelta.x / sc;
  ImGui::SameLine(0, 0);
  central(s, ImVec2(avail.x - side_w - gap, main_h));
  ImGui::InvisibleButton("##hsplit", ImVec2(avail.x, ImGui::GetStyle().ItemSpacing.y));
  if (ImGui::IsItemHovered() || ImGui::IsItemActive()) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeNS);
  if (ImGui::IsItemActive()) s.settings.jobs_h -= ImGui::GetIO().MouseDelta.y / sc;
  jobs_panel(s, ImVec2(avail.x, jobs_h - 2 * ImGui::GetStyle().ItemSpacing.y));
  status_bar(s);
  dialogs(s);
  ImGui::End();
  if (s.figure) figure_overlay(s);
}

// Beside a screenshot: what is on screen (the heatmap cell layout, the RD view's curves) for tests.
void write_layout_json(const Shell& s, const std::string& png_path) {
  auto grid = [](const views::GridLayout& g) {
    return nlohmann::json{{"x0", g.area.x0}, {"y0", g.area.y0}, {"x1", g.area.x1}, {"y1", g.area.y1},
                          {"rows", g.rows},  {"cols", g.cols},  {"gap", g.gap}};
  };
  nlohmann::json j = {{"view", kViews[s.view]},
                      {"metric", metric_key(s.metric)},
                      {"colormap", views::colormap_name(s.cmap)},
                      {"log_scale", s.log_scale},
                      {"dark", s.settings.dark}};
  if (s.view == 0) j["heatmaps"] = {{"k", grid(s.layout_k)}, {"v", grid(s.layout_v)}};
  if (s.view == 1) {
    nlohmann::json series = nlohmann::json::array();
    for (const auto& c : rd_data(s).series) series.push_back({{"name", c.name}, {"points", c.x.size()}});
    j["rd"] = {{"metric", views::rd_metric_key(s.rd_metric)}, {"series", series}};
  }
  if (!s.ws.replay_lines().empty()) j["replay"] = s.ws.replay_lines();
  if (const auto& r = s.ws.report()) j["report"] = {{"policy", r->policy_name}, {"bits_per_element", r->bits_per_element}};
  if (s.ws.has_selection())
    j["selected"] = {s.ws.selected_kind() == 'k' ? "k" : "v", s.ws.selected_layer(), s.ws.selected_head()};
  write_file_atomic(png_path + ".json", json_text(j, 2) + "\n");
}

void load_shell_settings(Shell& s) {
  // Bad scripts fail before any window exists (and without a display).
  if (!s.opts.script.empty()) s.script.actions = load_script(s.opts.script);
  s.settings_path = settings_path();
  s.settings = load_settings(s.settings_path);
  s.show_hint = s.settings.first_run;
  for (int i = 0; i < 4; ++i)
    if (s.settings.view == kViews[i]) s.view = i;
  s.view_forced = true;
  s.metric = metric_from_name(s.settings.metric);
  s.cmap = s.settings.colormap == "magma" ? views::Colormap::Magma : views::Colormap::Viridis;
  s.log_scale = s.settings.log_scale;
}

void save_shell_settings(Shell& s, const Window& w) {
  if (s.opts.width == 0 && s.opts.height == 0) w.size(&s.settings.window_w, &s.settings.window_h);
  s.settings.view = kViews[s.view];
  s.settings.metric = metric_key(s.metric);
  s.settings.colormap = views::colormap_name(s.cmap);
  s.settings.log_scale = s.log_scale;
  try {
    save_settings(s.settings_path, s.settings);
  } catch (const Error& e) {
    std::fprintf(stderr, "kvscope: warning: %s\n", e.what());
  }
}

int run_loop(Shell& s, Window& win) {
  Workspace& ws = s.ws;
  Clock::time_point started = Clock::now(), last_frame_start = Clock::now();
  uint64_t frame_count = 0;
  int unprobed = 0;  // frames left out of s.perf
  int exit_code = 0;
  while (!win.should_close() && !s.script.quit) {
    Clock::time_point frame_start = Clock::now();
    double interval = std::chrono::duration<double, std::milli>(frame_start - last_frame_start).count();
    last_frame_start = frame_start;
    if (interval > 0 && frame_count > 0) s.fps = 0.9 * s.fps + 0.1 * (1000.0 / interval);
    bool scripted = (s.script.active() && !s.script.done()) || s.opts.frames > 0;
    win.wait_events(!scripted && !ws.jobs().busy() && !ws.requantize_due() && !s.figure && win.seconds_since_input() > 1.0);
    ws.tick();
    step_script(s);

    win.begin_frame(s.script.active(), s.script.inject_pos, s.script.inject_button);
    frame(s);
    ImGui::Render();
    double ui_ms = std::chrono::duration<double, std::milli>(Clock::now() - frame_start).count();
    win.end_frame();
    int fw, fh;
    win.framebuffer_size(&fw, &fh);
    bool captured = false;  // a PNG written this frame: a script's measurement, not the app's work
    if (s.figure && s.figure_drawn) {
      captured = true;
      try {
        write_framebuffer_png(s.figure->path, 0, 0, std::min(s.figure->w, fw), std::min(s.figure->h, fh), fh);
      } catch (const Error& e) {
        s.error(e.what());
      }
      s.figure.reset();
      s.figure_drawn = false;
    }
    bool last_frame = (s.opts.frames > 0 && frame_count + 1 >= static_cast<uint64_t>(s.opts.frames) && s.script.done()) ||
                      (s.script.active() && s.script.done() && s.opts.frames == 0) || s.script.quit;
    if (!s.screenshot_path.empty() || (last_frame && !s.opts.screenshot.empty())) {
      captured = true;
      std::string path = s.screenshot_path.empty() ? s.opts.screenshot : s.screenshot_path;
      try {
        write_framebuffer_png(path, 0, 0, fw, fh, fh);
        write_layout_json(s, path);
      } catch (const Error& e) {
        std::fprintf(stderr, "kvscope: error: %s\n", e.what());
        exit_code = 1;
      }
      s.screenshot_path.clear();
    }
    win.swap();
    ++frame_count;
    // Not probed: the process's first frame (it builds the GL programs and the font texture,
    // 150-250 ms under Xvfb's software renderer) and a frame that wrote a PNG (a script's
    // screenshot, 100+ ms), each with the interval to the next frame.
    if (captured || frame_count == 1) unprobed = 2;
    if (unprobed > 0) --unprobed;
    else s.perf.frame_done(std::chrono::duration<double, std::milli>(Clock::now() - frame_start).count(), ui_ms, interval);
    if (last_frame) break;
    if (s.script.failed) {
      exit_code = 1;
      break;
    }
    if (s.script.active() && std::chrono::duration<double>(Clock::now() - started).count() > 600) {
      std::fprintf(stderr, "kvscope: error: %s: the script did not finish within 600 s\n", s.opts.script.c_str());
      exit_code = 1;
      break;
    }
    Window::pace(frame_start, (ws.jobs().busy() || s.script.wait_jobs_since) && win.seconds_since_input() > 0.25);
  }
  if (!ws.errors().empty() && s.script.active()) {
    for (const auto& e : ws.errors()) std::fprintf(stderr, "kvscope: error: %s\n", e.c_str());
    exit_code = 1;
  }
  return exit_code;
}

}  // namespace

int run_gui(const GuiOptions& opts) {
  Shell s(opts);
  load_shell_settings(s);
  int w = opts.width > 0 ? opts.width : s.settings.window_w;
  int h = opts.height > 0 ? opts.height : s.settings.window_h;
  Window win(w, h, (std::filesystem::path(s.settings_path).parent_path() / "imgui.ini").string());
  s.window = &win;
  win.apply_style(s.settings.dark, s.settings.ui_scale);
  s.models = discover_models();
  for (const auto& p : list_presets()) s.preset_names.push_back(p.name);
  if (!opts.open.empty()) {
    for (const auto& p : opts.open) s.ws.open_dump(p);  // latest wins: the last one stays open
  } else if (opts.demo) {
    s.ws.open_demo(opts.demo_tokens);
  }
  try {
    if (!opts.db.empty()) s.ws.open_store(opts.db);
    else if (std::filesystem::exists(default_db_path())) s.ws.open_store(default_db_path());
  } catch (const Error& e) {
    s.error(e.what());
  }
  int rc = run_loop(s, win);
  save_shell_settings(s, win);
  s.window = nullptr;
  return rc;
}

}  // namespace kvscope::gui
