// `kvscope report --db F --out DIR`: a Markdown report of the runs in a store with PNG figures
// drawn by the GUI's own widgets in a hidden window (under Xvfb when there is no display).
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/cli.h"
#include "app/gui/figure_renderer.h"
#include "app/gui/report_doc.h"
#include "app/store_options.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "core/util/interrupt.h"
#include "views/heatmap_view.h"
#include "views/plot_view.h"

namespace kvscope::cli {

namespace {

namespace fs = std::filesystem;

struct ReportArgs {
  std::string db, out, model, tag, metric = "attn_cos_mean", size = "960x600", theme = "dark";
  int64_t run = 0;
  bool has_run = false;
};

bool has_display() {
  const char* d = std::getenv("DISPLAY");
  const char* w = std::getenv("WAYLAND_DISPLAY");
  return (d && *d) || (w && *w);
}

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream in(path ? path : "");
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    fs::path p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return {};
}

// No display: run this same command again under `xvfb-run -a` (which starts and stops a private
// X server). Returns only by throwing.
[[noreturn]] void reexec_under_xvfb() {
  const char* how = "report: no display (DISPLAY is unset); run it under a display or `xvfb-run -a kvscope report ...`";
  if (std::getenv("KVSCOPE_REPORT_UNDER_XVFB")) throw Error(std::string(how) + " (xvfb-run gave no usable display)");
  std::string xvfb = find_on_path("xvfb-run");
  if (xvfb.empty()) throw Error(std::string(how) + "; xvfb-run is not installed (Debian: apt install xvfb)");
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string a; std::getline(cmdline, a, '\0');) args.push_back(a);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec || args.empty()) throw Error(std::string(how) + " (cannot read this process's command line to re-run it)");
  std::vector<std::string> full = {xvfb, "-a", "-s", "-screen 0 1280x1024x24", exe.string()};
  full.insert(full.end(), args.begin() + 1, args.end());
  std::vector<char*> argv;
  for (auto& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::setenv("KVSCOPE_REPORT_UNDER_XVFB", "1", 1);
  std::fflush(stdout);
  std::fflush(stderr);
  ::execv(xvfb.c_str(), argv.data());
  throw Error(fmt::format("report: cannot run {}: {}", xvfb, std::strerror(errno)));
}

// "WxH" in pixels, each side 320..4096 (ImGui's layout needs room; larger is a poster).
std::pair<int, int> parse_figure_size(const std::string& text) {
  int w = 0, h = 0;
  char x = 0, extra = 0;
  if (std::sscanf(text.c_str(), "%d%c%d%c", &w, &x, &h, &extra) != 3 || x != 'x' || w < 320 || h < 240 || w > 4096 ||
      h > 4096)
    fail("--size", "\"{}\" is not a figure size WxH between 320x240 and 4096x4096 (e.g. 1280x800)", text);
  return {w, h};
}

void draw_figure(const gui::ReportFigure& f, ImVec2 size) {
  if (f.kind == gui::ReportFigure::Kind::Plot) {
    views::draw_plot("figure", f.plot, size);
    return;
  }
  // The GUI's heatmap pair: K and V side by side on one colour scale, then the colour bar.
  ImGui::TextUnformatted(f.header.c_str());
  ImVec2 avail = ImGui::GetContentRegionAvail();
  float bar_w = 90;
  float map_w = (avail.x - bar_w) / 2 - 8;
  views::HeatmapStyle style;
  style.scale = f.scale;
  style.show_values = true;  // printed where a cell is large enough
  const views::Heatmap* maps[] = {&f.k, &f.v};
  for (int i = 0; i < 2; ++i) {
    ImGui::BeginGroup();
    views::draw_heatmap(i == 0 ? "heat_k" : "heat_v", *maps[i], style, ImVec2(map_w, avail.y));
    ImGui::EndGroup();
    ImGui::SameLine();
  }
  views::draw_colorbar("colorbar", f.scale, style.cmap, ImVec2(bar_w, avail.y));
}

void run_report(const ReportArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  if (!fs::exists(a.db)) fail(a.db, "no such run store (give --db FILE of a kvscope run database)");
  gui::ReportOptions o;
  o.db = a.db;
  o.model = a.model;
  o.tag = a.tag;
  if (a.has_run) o.run = a.run;
  o.metric = views::parse_report_metric(a.metric);
  const auto [width, height] = parse_figure_size(a.size);
  gui::FigureStyle style;
  style.dark = a.theme == "dark";
  gui::ReportPlan plan;
  {
    RunStore store(a.db);
    plan = gui::plan_report(gui::load_report_runs(store, o), o);
  }
  if (!has_display()) reexec_under_xvfb();

  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec || !fs::is_directory(a.out)) fail(a.out, "cannot create the output directory{}", ec ? ": " + ec.message() : "");
  // A stale report.md must not describe figures this run failed to redraw: it goes first, and the
  // new one is written last.
  const fs::path md = fs::path(a.out) / "report.md";
  fs::remove(md, ec);

  gui::FigureRenderer renderer(style);  // the GUI's theme and font
  for (const auto& f : plan.figures)
    renderer.render((fs::path(a.out) / f.file).string(), width, height, [&](ImVec2 size) { draw_figure(f, size); });

  write_file_atomic(md.string(), plan.markdown);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "kvscope report: wrote {} and {} figures ({} runs, {:.1f} s)\n", md.string(), plan.figures.size(),
             plan.runs.size(), secs);
}

}  // namespace

void register_report(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  auto* cmd = app.add_subcommand("report", "Write a Markdown report with PNG figures (RD curves, heatmaps, per-layer "
                                           "attention, tables) of the runs in a store");
  cmd->add_option("--db", a->db, "Run database to report on")->required();
  cmd->add_option("--out", a->out, "Output directory (report.md and *.png)")->required();
  auto* run = cmd->add_option("--run", a->run, "Run for the heatmap and per-layer figures (default: chosen, see the report)");
  cmd->add_option("--model", a->model, "Only runs whose model id contains this");
  cmd->add_option("--tag", a->tag, "Only runs with this tag");
  cmd->add_option("--metric", a->metric,
                  "Distortion for the RD curves and the run choice: attn_cos_mean, attn_cos_min, attn_nmse, "
                  "attn_kl_mean, k_nmse, v_nmse")
      ->capture_default_str();
  cmd->add_option("--size", a->size, "Figure size in pixels, WxH")->capture_default_str();
  cmd->add_option("--theme", a->theme, "Figure colours: dark (the GUI's) or light (for papers)")
      ->check(CLI::IsMember({"dark", "light"}))
      ->capture_default_str();
  cmd->callback([a, run] {
    a->has_run = run->count() > 0;
    run_report(*a);
  });
}

}  // namespace kvscope::cli
