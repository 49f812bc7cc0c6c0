#include "app/gui/gui_app.h"

#include <GLFW/glfw3.h>
#include <imgui.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "app/gui/job_runner.h"
#include "app/gui/png_capture.h"
#include "app/gui/run_list.h"
#include "app/gui/policy_tuning.h"
#include "app/gui/script.h"
#include "app/gui/settings.h"
#include "core/dump/kv_dump.h"
#include "core/quant/method_registry.h"
#include "core/metrics/head_profile.h"
#include "core/model/capture.h"
#include "core/model/discovery.h"
#include "core/model/model.h"
#include "core/policy/policy.h"
#include "core/quant/quantize_dump.h"
#include "core/replay/replay.h"
#include "core/synth/synth.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "core/tokenizer/tokenizer.h"
#include "storage/run_store.h"
#include "views/head_detail_view.h"
#include "views/heatmap_view.h"
#include "views/jobs_view.h"
#include "views/plot_view.h"
#include "views/policy_editor_view.h"
#include "views/report_grids.h"
#include "views/runs_table_view.h"
#include "core/util/json_text.h"

namespace kvscope::gui {

namespace {

using Clock = std::chrono::steady_clock;
using views::CellRef;
using views::HeadMetric;

constexpr const char* kFontPath = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
constexpr double kDebounceSeconds = 0.25;
constexpr int kLiveAttnQueries = 128;  // live tuning samples fewer query positions than the CLI default

const char* kViews[] = {"heatmap", "rd", "attention", "runs"};
const char* kViewTitles[] = {"Heatmap", "Rate-distortion", "Attention cosine", "Runs"};

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

// Time of the last user input (GLFW callbacks, main thread only): drives idle throttling.
double g_last_input = 0;
void note_input() { g_last_input = glfwGetTime(); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(q * v.size())) - 1;
  return v[std::min(i, v.size() - 1)];
}

// Checkpoint directories (config.json present) under the shared models dir and the HF cache.

class App {
 public:
  explicit App(const GuiOptions& o) : opts_(o) {}
  int run();

 private:
  // Setup.
  bool init();
  void shutdown();
  void apply_style();
  void rebuild_fonts();

  // Work.
  void open_demo();
  void open_dump(const std::string& path);
  void capture_dump_job(const ModelEntry& model);
  void replay_job(const ModelEntry& model);
  void set_dump(std::shared_ptr<const KvDump> dump, const std::string& name);
  void policy_edited(bool commit);
  void maybe_requantize();
  void start_attention_job(std::shared_ptr<const KvDump> dump, const Policy& p, uint64_t gen, const std::string& name);
  void start_sweep();
  void save_run();
  void refresh_profile();
  void load_preset_into_policy(const std::string& name);
  void open_store(const std::string& path);
  void open_run(int64_t id);

  // Frame.
  void frame();
  void menu_bar();
  void sidebar(ImVec2 size);
  void central(ImVec2 size);
  void heatmap_view(ImVec2 size);
  void heatmap_pair(ImVec2 size, bool interactive);
  void rd_view(ImVec2 size);
  views::PlotData rd_data() const;
  void attention_view(ImVec2 size);
  views::PlotData attention_data();
  void runs_view();
  void jobs_panel(ImVec2 size);
  void status_bar();
  void dialogs();
  void figure_overlay();
  void first_run_hint();

  // Script.
  void step_script();
  bool script_action(const ScriptAction& a);  // false: not done yet, call again next frame
  void set_field(const std::string& field, const std::string& value, const std::string& where);
  void write_layout_json(const std::string& png_path);
  void error(const std::string& msg) { errors_.push_back(msg); }

  GuiOptions opts_;
  GLFWwindow* window_ = nullptr;
  Settings settings_;
  std::string settings_path_, ini_path_;
  bool fonts_dirty_ = true;
  float font_scale_loaded_ = 0;

  JobRunner runner_;
  std::shared_ptr<const KvDump> dump_;
  std::string dump_name_;
  Policy policy_;
  std::string policy_path_ = "policy.json";
  views::OverrideDraft override_draft_;
  uint64_t policy_gen_ = 0;
  std::optional<Clock::time_point> requant_due_;
  std::shared_ptr<const QuantizeReport> report_;
  std::shared_ptr<const DequantizedKV> deq_;
  uint64_t report_gen_ = 0;  // policy generation the report on screen was computed for
  std::string live_status_;

  int view_ = 0;
  bool view_forced_ = false;  // select the tab once (menu / script)
  HeadMetric metric_ = HeadMetric::Nmse;
  bool log_scale_ = true;
  views::Colormap cmap_ = views::Colormap::Viridis;
  bool show_values_ = false;
  CellRef selected_;
  char selected_kind_ = 'k';
  std::optional<HeadProfile> profile_;
  views::GridLayout layout_k_, layout_v_;

  RunList runs_;
  std::string db_input_;
  views::RunsTableState runs_state_;
  views::RdMetric rd_metric_ = views::RdMetric::KNmse;
  bool attn_nmse_ = false;
  std::vector<int64_t> attn_runs_;  // session runs overlaid in the attention view
  std::vector<ModelEntry> models_;  // discover_models(): HF cache and $KVSCOPE_MODEL_PATH
  std::string capture_text_;        // text file to capture a dump on (empty: a built-in passage)
  int capture_tokens_ = 512;
  std::string replay_spec_ = "passkey:len=256,depth=0.5,n=2";  // workload for Replay (see docs/REPLAY.md)
  std::vector<std::string> replay_lines_;                       // the last replay, one short line per slice
  std::vector<std::string> preset_names_;

  std::vector<std::string> errors_;
  bool open_dump_popup_ = false;
  std::string open_path_;
  bool show_hint_ = false;

  // Figure / screenshot capture.
  struct FigureRequest {
    std::string view, path;
    int w = 0, h = 0;
  };
  std::optional<FigureRequest> figure_;
  FigureRequest figure_draft_{"heatmap", "kvscope-heatmap.png", 1000, 700};
  bool figure_popup_ = false;
  void ask_figure(const std::string& view) {
    figure_draft_.view = view;
    figure_draft_.path = "kvscope-" + view + ".png";
    figure_popup_ = true;
  }
  bool figure_drawn_ = false;
  std::string screenshot_path_;

  // Script and measurement.
  std::vector<ScriptAction> script_;
  size_t script_pos_ = 0;
  int wait_frames_ = 0;
  std::optional<Clock::time_point> wait_jobs_since_;
  bool script_failed_ = false;
  bool quit_ = false;
  std::optional<ImVec2> inject_pos_;
  int inject_button_ = -1;  // held for one frame
  bool inject_release_ = false;
  uint64_t frame_count_ = 0;
  bool perf_on_ = false;
  std::vector<double> frame_ms_, interval_ms_, latency_ms_;
  std::optional<Clock::time_point> commit_time_, attn_commit_time_;
  bool attn_latency_frame_pending_ = false;
  std::vector<double> attn_latency_ms_, ui_ms_;
  uint64_t commit_gen_ = 0;
  bool latency_frame_pending_ = false;
  double last_latency_ms_ = -1;
  Clock::time_point last_frame_start_ = Clock::now();
  double fps_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Setup

bool App::init() {
  // Bad scripts fail before any window exists (and without a display).
  if (!opts_.script.empty()) script_ = load_script(opts_.script);
  settings_path_ = settings_path();
  settings_ = load_settings(settings_path_);
  show_hint_ = settings_.first_run;
  for (int i = 0; i < 4; ++i)
    if (settings_.view == kViews[i]) view_ = i;
  view_forced_ = true;
  metric_ = metric_from_name(settings_.metric);
  cmap_ = settings_.colormap == "magma" ? views::Colormap::Magma : views::Colormap::Viridis;
  log_scale_ = settings_.log_scale;

  glfwSetErrorCallback([](int code, const char* msg) { std::fprintf(stderr, "kvscope: glfw error %d: %s\n", code, msg); });
  if (!glfwInit()) throw Error("gui: cannot initialise GLFW (is there a display? try xvfb-run)");
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  int w = opts_.width > 0 ? opts_.width : settings_.window_w;
  int h = opts_.height > 0 ? opts_.height : settings_.window_h;
  window_ = glfwCreateWindow(w, h, "kvscope", nullptr, nullptr);
  if (!window_) {
    glfwTerminate();
    throw Error("gui: cannot create an OpenGL 3.0 window (is there a display? try xvfb-run)");
  }
  glfwMakeContextCurrent(window_);
  glfwSwapInterval(1);
  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  std::filesystem::path ini = std::filesystem::path(settings_path_).parent_path() / "imgui.ini";
  ini_path_ = ini.string();
  io.IniFilename = ini_path_.c_str();
  // Installed before ImGui's backend, which chains to them.
  glfwSetCursorPosCallback(window_, [](GLFWwindow*, double, double) { note_input(); });
  glfwSetMouseButtonCallback(window_, [](GLFWwindow*, int, int, int) { note_input(); });
  glfwSetScrollCallback(window_, [](GLFWwindow*, double, double) { note_input(); });
  glfwSetKeyCallback(window_, [](GLFWwindow*, int, int, int, int) { note_input(); });
  glfwSetCharCallback(window_, [](GLFWwindow*, unsigned) { note_input(); });
  glfwSetWindowSizeCallback(window_, [](GLFWwindow*, int, int) { note_input(); });
  glfwSetWindowFocusCallback(window_, [](GLFWwindow*, int) { note_input(); });
  ImGui_ImplGlfw_InitForOpenGL(window_, true);
  ImGui_ImplOpenGL3_Init("#version 130");
  apply_style();
  models_ = discover_models();
  for (const auto& p : list_presets()) preset_names_.push_back(p.name);
  return true;
}

void App::shutdown() {
  if (!window_) return;
  int w, h;
  glfwGetWindowSize(window_, &w, &h);
  if (opts_.width == 0 && opts_.height == 0) {
    settings_.window_w = w;
    settings_.window_h = h;
  }
  settings_.view = kViews[view_];
  settings_.metric = metric_key(metric_);
  settings_.colormap = views::colormap_name(cmap_);
  settings_.log_scale = log_scale_;
  try {
    save_settings(settings_path_, settings_);
  } catch (const Error& e) {
    std::fprintf(stderr, "kvscope: warning: %s\n", e.what());
  }
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window_);
  glfwTerminate();
  window_ = nullptr;
}

void App::apply_style() {
  ImGuiStyle fresh;
  ImGui::GetStyle() = fresh;
  if (settings_.dark) ImGui::StyleColorsDark();
  else ImGui::StyleColorsLight();
  ImGuiStyle& st = ImGui::GetStyle();
  st.WindowRounding = 0;
  st.FrameRounding = 3;
  st.ScaleAllSizes(settings_.ui_scale);
  fonts_dirty_ = true;
}

void App::rebuild_fonts() {
  ImGuiIO& io = ImGui::GetIO();
  io.Fonts->Clear();
  float px = std::round(15.0f * settings_.ui_scale);
  if (std::filesystem::exists(kFontPath)) io.Fonts->AddFontFromFileTTF(kFontPath, px);
  else {
    ImFontConfig cfg;
    cfg.SizePixels = px;
    io.Fonts->AddFontDefault(&cfg);
  }
  ImGui_ImplOpenGL3_DestroyFontsTexture();
  ImGui_ImplOpenGL3_CreateFontsTexture();
  font_scale_loaded_ = settings_.ui_scale;
  fonts_dirty_ = false;
}

// ---------------------------------------------------------------------------------------------
// Work

void App::set_dump(std::shared_ptr<const KvDump> dump, const std::string& name) {
  dump_ = std::move(dump);
  dump_name_ = name;
  report_.reset();
  deq_.reset();
  profile_.reset();
  selected_ = {};
  policy_edited(true);
}

void App::open_demo() {
  int tokens = opts_.demo_tokens;
  runner_.submit(
      "synthesize demo dump (" + std::to_string(tokens) + " tokens)",
      [this, tokens](JobContext& ctx) -> JobRunner::Completion {
        SynthOptions so;
        so.tokens = tokens;
        auto dump = std::make_shared<const KvDump>(make_synthetic_dump(so));
        ctx.progress = 1.0;
        return [this, dump] { set_dump(dump, "demo (synthetic Qwen2.5-0.5B-shaped)"); };
      },
      "dump");
}

void App::open_dump(const std::string& path) {
  runner_.submit(
      "load " + std::filesystem::path(path).filename().string(),
      [this, path](JobContext& ctx) -> JobRunner::Completion {
        auto dump = std::make_shared<const KvDump>(load_dump(path));
        ctx.progress = 1.0;
        return [this, dump, path] {
          remember_recent(settings_.recent_dumps, path);
          set_dump(dump, path);
        };
      },
      "dump");
}

// Public-domain prose (Alice in Wonderland, ch. 1) used when no capture text file is given.
constexpr const char* kCapturePassage =
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: once "
    "or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it, "
    "'and what is the use of a book,' thought Alice 'without pictures or conversations?' So she was considering in "
    "her own mind (as well as she could, for the hot day made her feel very sleepy and stupid), whether the pleasure "
    "of making a daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a White "
    "Rabbit with pink eyes ran close by her. ";

void App::capture_dump_job(const ModelEntry& entry) {
  const std::string dir = entry.dir, id = entry.id, text_file = capture_text_;
  const int tokens = capture_tokens_;
  runner_.submit(
      "capture " + id + " (" + std::to_string(tokens) + " tokens)",
      [this, dir, id, text_file, tokens](JobContext& ctx) -> JobRunner::Completion {
        std::string text;
        if (text_file.empty()) {
          while (text.size() < static_cast<size_t>(tokens) * 8) text += kCapturePassage;
        } else {
          text = read_file(text_file, "text file");
        }
        auto tok = load_tokenizer(dir);
        auto model = Model::load(dir);
        std::vector<int32_t> ids = tok->encode(text, /*add_bos=*/true);
        int limit = tokens;
        if (model->config().max_position_embeddings > 0) limit = std::min(limit, model->config().max_position_embeddings);
        if (static_cast<int>(ids.size()) > limit) ids.resize(limit);
        CaptureOptions co;
        co.model_id = id;
        co.prompt = text_file.empty() ? "built-in passage" : text_file;
        co.workload = text_file.empty() ? "gui:passage" : "text:" + std::filesystem::path(text_file).filename().string();
        co.progress = [c = &ctx](int done, int total) {
          c->progress = double(done) / total;
          if (c->cancel) throw Cancelled();  // between prefill chunks
        };
        auto dump = std::make_shared<const KvDump>(capture_dump(*model, ids, co));
        return [this, dump, id] { set_dump(dump, id + " (captured)"); };
      },
      "dump");
}

// Replays the model with the policy in the editor against the fp16 reference (core/replay), off the
// UI thread; the TEST_METRICS lines go to the sidebar and to stdout (as `kvscope replay` prints them).
void App::replay_job(const ModelEntry& entry) {
  Policy p;
  try {
    p = parse_policy(policy_to_json(policy_), "policy editor");
  } catch (const Error& e) {
    error(e.what());
    return;
  }
  const std::string dir = entry.dir, id = entry.id, spec = replay_spec_;
  runner_.submit(
      "replay " + id + " " + (p.name.empty() ? method_name(p.method) : p.name) + " on " + spec,
      [this, dir, id, spec, p](JobContext& ctx) -> JobRunner::Completion {
        auto tok = load_tokenizer(dir);
        auto model = Model::load(dir);
        check_bit_budget(model->config(), p);
        auto slices = load_workloads({spec}, *tok, model->config().max_position_embeddings);
        size_t total = 0, done = 0;
        for (const auto& sl : slices) total += sl.items.size();
        ReplayOptions ro;
        ro.cancel = &ctx.cancel;
        ro.progress = [&](const std::string&) { ctx.progress = total ? double(++done) / total : 0.5; };
        const auto t0 = Clock::now();
        auto metrics = run_replay(*model, *tok, slices, p, ro);
        // stdout gets the CLI's TEST_METRICS lines; the narrow sidebar the numbers one reads first.
        auto lines = std::make_shared<std::vector<std::string>>(), summary = std::make_shared<std::vector<std::string>>();
        for (const auto& m : metrics) {
          lines->push_back(test_metrics_line(m));
          summary->push_back(fmt::format("{}: {:.2f} b/KV, KL {:.3g}, greedy {:.3f}, quality {:.3g} ({:+.3g} vs fp16)", m.slice,
                                         m.avg_bits_per_kv_token, m.next_token_kl, m.greedy_match_ratio, m.quality_main,
                                         m.quality_delta_vs_ref));
        }
        auto record = std::make_shared<ReplayRecord>(
            replay_record(p, p.name.empty() ? method_name(p.method) : p.name, id, model->config(), spec, metrics,
                          std::chrono::duration<double>(Clock::now() - t0).count()));
        return [this, lines, summary, record] {
          replay_lines_ = *summary;
          for (const auto& l : *lines) std::printf("%s\n", l.c_str());
          std::fflush(stdout);
          // Kept like `kvscope replay` keeps it: in the open store, else the default one.
          try {
            if (!runs_.has_store()) open_store(default_db_path());
            int64_t id = runs_.add_replay(*record);
            live_status_ = "replay stored as run " + std::to_string(id) + " in " + runs_.store_path();
          } catch (const Error& e) {
            error(e.what());
          }
        };
      },
      "replay");
}

void App::policy_edited(bool commit) {
  ++policy_gen_;
  auto now = Clock::now();
  auto due = commit ? now : now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(kDebounceSeconds));
  // A commit never waits; a drag keeps pushing the deadline out (debounce).
  requant_due_ = due;
  if (commit) {
    commit_time_ = attn_commit_time_ = now;
    commit_gen_ = policy_gen_;
  }
}

void App::load_preset_into_policy(const std::string& name) {
  try {
    policy_ = load_preset(name);
    policy_edited(true);
  } catch (const Error& e) {
    error(e.what());
  }
}

void App::maybe_requantize() {
  if (!requant_due_ || Clock::now() < *requant_due_ || !dump_) return;
  requant_due_.reset();
  Policy p;
  try {
    p = parse_policy(policy_to_json(policy_), "policy editor");
  } catch (const Error& e) {
    live_status_ = e.what();
    return;
  }
  live_status_ = "re-quantizing...";
  auto dump = dump_;
  uint64_t gen = policy_gen_;
  std::string name = p.name.empty() ? method_name(p.method) : p.name;
  runner_.cancel_slot("attention");
  // Two phases so the heatmap refreshes fast: tensor metrics (cheap) first, then the attention
  // metrics (the causal attention replay dominates the cost) in a second job.
  runner_.submit(
      "quantize: " + name,
      [this, dump, p, gen, name](JobContext& ctx) -> JobRunner::Completion {
        QuantizeOptions qo;
        qo.attention = false;
        qo.cancel = &ctx.cancel;
        qo.progress = [c = &ctx](double f) { c->progress = f; };
        qo.keep_dequantized = true;
        auto deq = std::make_shared<DequantizedKV>();
        auto rep = std::make_shared<const QuantizeReport>(quantize_dump(*dump, p, qo, deq.get()));
        return [this, dump, rep, deq, gen, p, name] {
          if (dump != dump_) return;  // the dump changed meanwhile
          report_ = rep;
          deq_ = deq;
          report_gen_ = gen;
          live_status_ = gen == policy_gen_ ? "attention metrics updating..." : "re-quantizing...";
          refresh_profile();
          if (commit_time_ && gen >= commit_gen_) latency_frame_pending_ = true;
          if (dump->has_q()) start_attention_job(dump, p, gen, name);
          else if (gen == policy_gen_) live_status_ = "up to date (the dump has no queries: no attention metrics)";
        };
      },
      "requantize");
}

void App::start_attention_job(std::shared_ptr<const KvDump> dump, const Policy& p, uint64_t gen, const std::string& name) {
  runner_.submit(
      "attention metrics: " + name,
      [this, dump, p, gen](JobContext& ctx) -> JobRunner::Completion {
        QuantizeOptions qo;
        qo.attn_queries = kLiveAttnQueries;
        qo.cancel = &ctx.cancel;
        qo.progress = [c = &ctx](double f) { c->progress = f; };
        auto rep = std::make_shared<const QuantizeReport>(quantize_dump(*dump, p, qo));
        return [this, dump, rep, gen] {
          if (dump != dump_ || gen != report_gen_) return;  // a newer tensor pass is on screen
          report_ = rep;
          if (gen == policy_gen_) live_status_ = "up to date";
          if (attn_commit_time_ && gen >= commit_gen_) attn_latency_frame_pending_ = true;
        };
      },
      "attention");
}

void App::start_sweep() {
  if (!dump_) return;
  auto dump = dump_;
  std::vector<Policy> policies;
  for (const auto& info : list_presets()) {
    try {
      policies.push_back(load_preset(info.name));
    } catch (const Error& e) {
      error(e.what());
    }
  }
  runner_.submit("sweep " + std::to_string(policies.size()) + " presets", [this, dump, policies](JobContext& ctx) -> JobRunner::Completion {
    auto reports = std::make_shared<std::vector<std::pair<Policy, std::shared_ptr<const QuantizeReport>>>>();
    for (size_t i = 0; i < policies.size(); ++i) {
      QuantizeOptions qo;
      qo.attn_queries = kLiveAttnQueries;
      qo.cancel = &ctx.cancel;
      double base = double(i) / policies.size(), share = 1.0 / policies.size();
      qo.progress = [c = &ctx, base, share](double f) { c->progress = base + share * f; };
      reports->emplace_back(policies[i], std::make_shared<const QuantizeReport>(quantize_dump(*dump, policies[i], qo)));
    }
    return [this, reports] {
      try {
        for (auto& [pol, rep] : *reports) runs_.add(*rep, {"sweep"});
      } catch (const Error& e) {
        error(e.what());
      }
    };
  });
}

void App::save_run() {
  if (!report_) {
    error("save run: no quantization result yet (wait for the job to finish)");
    return;
  }
  try {
    // "Save run" keeps it: open the default run store when none is open yet.
    if (!runs_.has_store()) open_store(default_db_path());
    int64_t id = runs_.add(*report_);
    attn_runs_.push_back(id);
    live_status_ = "saved as run " + std::to_string(id) + " in " + runs_.store_path();
  } catch (const Error& e) {
    error(e.what());
  }
}

void App::open_store(const std::string& path) {
  runs_.open_store(path);
  remember_recent(settings_.recent_dbs, path);
}

void App::open_run(int64_t id) {
  // Opening a run shows its stored report and loads its policy into the editor; the next
  // edit re-quantizes the open dump with it. A replay run has no per-head report: only its policy.
  auto row = std::find_if(runs_.rows().begin(), runs_.rows().end(), [&](const views::RunRow& r) { return r.id == id; });
  if (row != runs_.rows().end() && row->replay) {
    try {
      policy_ = runs_.policy(id);
      policy_edited(true);
      live_status_ = "run " + std::to_string(id) + " is a replay: its policy is in the editor, its metrics in the runs table";
    } catch (const Error& e) {
      error(e.what());
    }
    return;
  }
  auto rep = runs_.report(id);
  if (!rep) {
    error("run " + std::to_string(id) + ": cannot be loaded");
    return;
  }
  try {
    policy_ = runs_.policy(id);
  } catch (const Error& e) {
    error(e.what());
  }
  report_ = rep;
  deq_.reset();
  refresh_profile();
  view_ = 0;
  view_forced_ = true;
}

void App::refresh_profile() {
  if (!dump_ || !selected_.valid()) {
    profile_.reset();
    return;
  }
  const float* deq = nullptr;
  int layer = selected_.row, head = selected_.col;
  if (deq_) {
    const auto& t = selected_kind_ == 'k' ? deq_->k : deq_->v;
    if (layer < static_cast<int>(t.size()) && !t[layer].empty()) deq = t[layer].data() + head * dump_->head_elems();
  }
  try {
    profile_ = profile_head(*dump_, layer, head, selected_kind_, deq);
  } catch (const Error& e) {
    profile_.reset();
    error(e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Frame

int App::run() {
  init();
  if (!opts_.open.empty()) {
    for (const auto& p : opts_.open) open_dump(p);  // latest wins: the last one stays open
  } else if (opts_.demo) {
    open_demo();
  }
  policy_ = load_preset("kivi-2");
  try {
    if (!opts_.db.empty()) open_store(opts_.db);
    else if (std::filesystem::exists(default_db_path())) open_store(default_db_path());
  } catch (const Error& e) {
    error(e.what());
  }
  Clock::time_point started = Clock::now();
  int exit_code = 0;
  while (!glfwWindowShouldClose(window_) && !quit_) {
    Clock::time_point frame_start = Clock::now();
    double interval = std::chrono::duration<double, std::milli>(frame_start - last_frame_start_).count();
    last_frame_start_ = frame_start;
    if (interval > 0) fps_ = 0.9 * fps_ + 0.1 * (1000.0 / interval);
    // Idle (no input for a second, no work, no script): sleep until an event instead of
    // redrawing an unchanged window 60 times a second.
    bool scripted = (!script_.empty() && script_pos_ < script_.size()) || opts_.frames > 0;
    bool idle = !scripted && !runner_.busy() && !requant_due_ && !figure_ && glfwGetTime() - g_last_input > 1.0;
    if (idle) glfwWaitEventsTimeout(0.5);
    else glfwPollEvents();
    if (fonts_dirty_) rebuild_fonts();
    runner_.poll();
    for (auto& e : runner_.take_errors()) error(e);
    maybe_requantize();
    step_script();

    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    if (!script_.empty()) {
      // Scripted runs own the mouse: the real cursor must not disturb screenshots.
      ImGuiIO& io = ImGui::GetIO();
      io.MousePos = inject_pos_ ? *inject_pos_ : ImVec2(-FLT_MAX, -FLT_MAX);
      for (int b = 0; b < 3; ++b) io.MouseDown[b] = b == inject_button_;
    }
    ImGui::NewFrame();
    frame();
    ImGui::Render();
    double ui_ms = std::chrono::duration<double, std::milli>(Clock::now() - frame_start).count();
    int fw, fh;
    glfwGetFramebufferSize(window_, &fw, &fh);
    glViewport(0, 0, fw, fh);
    ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
    glClearColor(bg.x, bg.y, bg.z, 1);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());

    if (figure_ && figure_drawn_) {
      try {
        write_framebuffer_png(figure_->path, 0, 0, std::min(figure_->w, fw), std::min(figure_->h, fh), fh);
      } catch (const Error& e) {
        error(e.what());
      }
      figure_.reset();
      figure_drawn_ = false;
    }
    bool last_frame = (opts_.frames > 0 && frame_count_ + 1 >= static_cast<uint64_t>(opts_.frames) &&
                       script_pos_ >= script_.size()) ||
                      (!script_.empty() && script_pos_ >= script_.size() && opts_.frames == 0) || quit_;
    if (!screenshot_path_.empty() || (last_frame && !opts_.screenshot.empty())) {
      std::string path = screenshot_path_.empty() ? opts_.screenshot : screenshot_path_;
      try {
        write_framebuffer_png(path, 0, 0, fw, fh, fh);
        write_layout_json(path);
      } catch (const Error& e) {
        std::fprintf(stderr, "kvscope: error: %s\n", e.what());
        exit_code = 1;
      }
      screenshot_path_.clear();
    }
    glfwSwapBuffers(window_);
    ++frame_count_;

    double work_ms = std::chrono::duration<double, std::milli>(Clock::now() - frame_start).count();
    if (perf_on_) {
      frame_ms_.push_back(work_ms);
      ui_ms_.push_back(ui_ms);
      interval_ms_.push_back(interval);
    }
    if (latency_frame_pending_ && commit_time_) {
      last_latency_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - *commit_time_).count();
      if (perf_on_) latency_ms_.push_back(last_latency_ms_);
      commit_time_.reset();
      latency_frame_pending_ = false;
    }
    if (attn_latency_frame_pending_ && attn_commit_time_) {
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - *attn_commit_time_).count();
      if (perf_on_) attn_latency_ms_.push_back(ms);
      attn_commit_time_.reset();
      attn_latency_frame_pending_ = false;
    }
    if (last_frame) break;
    if (script_failed_) {
      exit_code = 1;
      break;
    }
    if (!script_.empty() && seconds_since(started) > 600) {
      std::fprintf(stderr, "kvscope: error: %s: the script did not finish within 600 s\n", opts_.script.c_str());
      exit_code = 1;
      break;
    }
    // Cap at ~60 fps when the swap does not wait for vblank (Xvfb, some drivers). While only
    // progress bars move (a job runs, nobody touches the UI) 20 fps leave the cores to the job.
    bool calm = (runner_.busy() || wait_jobs_since_) && glfwGetTime() - g_last_input > 1.0;
    std::this_thread::sleep_until(frame_start + std::chrono::microseconds(calm ? 50000 : 16600));
  }
  if (!errors_.empty() && !script_.empty()) {
    for (const auto& e : errors_) std::fprintf(stderr, "kvscope: error: %s\n", e.c_str());
    exit_code = 1;
  }
  shutdown();
  return exit_code;
}

void App::frame() {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(vp->WorkPos);
  ImGui::SetNextWindowSize(vp->WorkSize);
  ImGuiWindowFlags flags = ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_MenuBar |
                           ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoSavedSettings;
  ImGui::PushStyleVar(ImGuiStyleVar_WindowPadding, ImVec2(6, 6));
  ImGui::Begin("kvscope", nullptr, flags);
  ImGui::PopStyleVar();
  menu_bar();
  float s = settings_.ui_scale;
  float status_h = ImGui::GetFrameHeightWithSpacing();
  ImVec2 avail = ImGui::GetContentRegionAvail();
  // Sidebar width and jobs panel height are dragged with the splitters and kept in the settings.
  float side_w = std::clamp(settings_.sidebar_w * s, 200.0f, avail.x * 0.6f);
  float jobs_h = std::clamp(settings_.jobs_h * s, 60.0f, avail.y * 0.5f);
  float main_h = avail.y - jobs_h - status_h;
  float gap = ImGui::GetStyle().ItemSpacing.x;
  sidebar(ImVec2(side_w, main_h));
  ImGui::SameLine(0, 0);
  ImGui::InvisibleButton("##vsplit", ImVec2(gap, main_h));
  if (ImGui::IsItemHovered() || ImGui::IsItemActive()) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeEW);
  if (ImGui::IsItemActive()) settings_.sidebar_w += ImGui::GetIO().MouseDelta.x / s;
  ImGui::SameLine(0, 0);
  central(ImVec2(avail.x - side_w - gap, main_h));
  ImGui::InvisibleButton("##hsplit", ImVec2(avail.x, ImGui::GetStyle().ItemSpacing.y));
  if (ImGui::IsItemHovered() || ImGui::IsItemActive()) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeNS);
  if (ImGui::IsItemActive()) settings_.jobs_h -= ImGui::GetIO().MouseDelta.y / s;
  jobs_panel(ImVec2(avail.x, jobs_h - 2 * ImGui::GetStyle().ItemSpacing.y));
  status_bar();
  dialogs();
  ImGui::End();
  if (figure_) figure_overlay();
}

void App::menu_bar() {
  if (!ImGui::BeginMenuBar()) return;
  if (ImGui::BeginMenu("File")) {
    if (ImGui::MenuItem("Open dump...")) {
      open_dump_popup_ = true;
    }
    if (ImGui::MenuItem("Open built-in demo")) open_demo();
    if (ImGui::BeginMenu("Recent dumps", !settings_.recent_dumps.empty())) {
      for (const auto& r : settings_.recent_dumps)
        if (ImGui::MenuItem(r.c_str())) open_dump(r);
      ImGui::EndMenu();
    }
    ImGui::Separator();
    if (ImGui::MenuItem("Save heatmap figure...")) ask_figure("heatmap");
    if (ImGui::MenuItem("Save RD figure...")) ask_figure("rd");
    if (ImGui::MenuItem("Save attention figure...")) ask_figure("attention");
    ImGui::Separator();
    if (ImGui::MenuItem("Quit")) glfwSetWindowShouldClose(window_, 1);
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("View")) {
    for (int i = 0; i < 4; ++i)
      if (ImGui::MenuItem(kViewTitles[i], nullptr, view_ == i)) {
        view_ = i;
        view_forced_ = true;
      }
    ImGui::Separator();
    if (ImGui::MenuItem("Dark theme", nullptr, settings_.dark)) {
      settings_.dark = !settings_.dark;
      apply_style();
    }
    float scale = settings_.ui_scale;
    if (ImGui::SliderFloat("UI scale", &scale, 0.75f, 2.0f, "%.2f")) settings_.ui_scale = scale;
    if (ImGui::IsItemDeactivatedAfterEdit()) apply_style();
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("Help")) {
    if (ImGui::MenuItem("What to do next")) show_hint_ = true;
    ImGui::EndMenu();
  }
  ImGui::EndMenuBar();
}

void App::sidebar(ImVec2 size) {
  ImGui::BeginChild("sidebar", size, true);
  if (ImGui::CollapsingHeader("Sources", ImGuiTreeNodeFlags_DefaultOpen)) {
    ImGui::TextDisabled("Dump");
    ImGui::TextWrapped("%s", dump_ ? dump_name_.c_str() : "(loading...)");
    if (dump_) {
      const DumpShape& s = dump_->shape;
      ImGui::TextDisabled("%d layers x %d KV heads (%d Q) x %d tokens x %d", s.layers, s.kv_heads, s.q_heads, s.tokens,
                          s.head_dim);
    }
    if (ImGui::SmallButton("Open dump...")) open_dump_popup_ = true;
    ImGui::SameLine();
    if (ImGui::SmallButton("Demo")) open_demo();
    if (!models_.empty() && ImGui::TreeNode("models", "Models found (%d)", static_cast<int>(models_.size()))) {
      ImGui::SetNextItemWidth(-1);
      ImGui::InputTextWithHint("##captext", "capture text file (empty: built-in passage)", &capture_text_);
      ImGui::SetNextItemWidth(120 * settings_.ui_scale);
      ImGui::SliderInt("tokens##cap", &capture_tokens_, 16, 4096);
      ImGui::SetNextItemWidth(-1);
      ImGui::InputTextWithHint("##replayspec", "replay workload: text:PATH | jsonl:PATH | passkey:len=L,depth=D,n=N", &replay_spec_);
      for (const auto& l : replay_lines_) ImGui::TextWrapped("%s", l.c_str());
      for (size_t i = 0; i < models_.size(); ++i) {
        const ModelEntry& m = models_[i];
        ImGui::PushID(static_cast<int>(i));
        if (m.error.empty()) {
          if (ImGui::SmallButton("Capture")) capture_dump_job(m);
          ImGui::SameLine();
          if (ImGui::SmallButton("Replay")) replay_job(m);
          ImGui::SameLine();
        }
        ImGui::TextUnformatted(m.id.c_str());
        if (ImGui::IsItemHovered()) {
          if (m.error.empty())
            ImGui::SetTooltip("%s\n%s, %d layers, %d/%d heads, head_dim %d, %s\nCapture: run it on the text and open the dump",
                              m.dir.c_str(), std::string(arch_name(m.config.arch)).c_str(), m.config.num_layers, m.config.num_heads,
                              m.config.num_kv_heads, m.config.head_dim, m.dtype.c_str());
          else
            ImGui::SetTooltip("%s\n%s", m.dir.c_str(), m.error.c_str());
        }
        ImGui::PopID();
      }
      ImGui::TreePop();
    }
    ImGui::Separator();
    ImGui::TextDisabled("Run store");
    ImGui::TextWrapped("%s", runs_.has_store() ? runs_.store_path().c_str() : "(none open; Save run opens the default)");
    ImGui::SetNextItemWidth(-60 * settings_.ui_scale);
    ImGui::InputTextWithHint("##db", "database path", &db_input_);
    ImGui::SameLine();
    if (ImGui::SmallButton("Open##db") && !db_input_.empty()) {
      try {
        open_store(db_input_);
      } catch (const Error& e) {
        error(e.what());
      }
    }
    for (const auto& r : settings_.recent_dbs)
      if (ImGui::Selectable(r.c_str(), r == runs_.store_path())) {
        try {
          open_store(r);
        } catch (const Error& e) {
          error(e.what());
        }
      }
    ImGui::TextDisabled("%d runs", static_cast<int>(runs_.rows().size()));
  }
  if (ImGui::CollapsingHeader("Policy", ImGuiTreeNodeFlags_DefaultOpen)) {
    views::PolicyEditorInfo info;
    info.presets = preset_names_;
    info.methods = method_names();
    if (dump_) {
      CostEstimate e;
      try {
        e = estimate_cost(policy_, *dump_);
      } catch (const Error& err) {
        info.status = err.what();
      }
      info.est_bits_per_element = e.bits_per_element;
      info.est_bytes_per_token = e.bytes_per_token;
    }
    if (report_) info.measured_bits_per_element = report_->bits_per_element;
    if (info.status.empty()) info.status = live_status_;
    views::PolicyEditorIntent in = views::draw_policy_editor(policy_, policy_path_, override_draft_, info,
                                                             dump_ ? dump_->shape.layers : 0, dump_ ? dump_->shape.kv_heads : 0);
    if (const QuantMethod* m = find_method(in.method)) policy_.method = m;  // the method combo
    if (!in.load_preset.empty()) {
      load_preset_into_policy(in.load_preset);
    } else if (!in.add_override.empty()) {
      try {
        nlohmann::json j = policy_to_json(policy_);
        if (!j.contains("overrides")) j["overrides"] = nlohmann::json::array();
        j["overrides"].push_back(nlohmann::json::parse(in.add_override));
        policy_ = parse_policy(j, "policy editor");
        policy_edited(true);
      } catch (const std::exception& e) {
        error(e.what());
      }
    } else if (in.remove_override >= 0) {
      try {
        nlohmann::json j = policy_to_json(policy_);
        j["overrides"].erase(static_cast<size_t>(in.remove_override));
        policy_ = parse_policy(j, "policy editor");
        policy_edited(true);
      } catch (const std::exception& e) {
        error(e.what());
      }
    } else if (in.changed) {
      policy_edited(in.committed);
    } else if (in.committed) {
      policy_edited(true);
    }
    if (in.save_run) save_run();
    if (in.save_policy) {
      try {
        std::string tmp = policy_path_ + ".tmp";
        {
          std::ofstream out(tmp);
          if (!out) fail(policy_path_, "cannot write the policy");
          out << json_text(policy_to_json(policy_), 2) << "\n";
        }
        std::filesystem::rename(tmp, policy_path_);
        live_status_ = "policy written to " + policy_path_;
      } catch (const std::exception& e) {
        error(e.what());
      }
    }
  }
  ImGui::EndChild();
}

void App::central(ImVec2 size) {
  ImGui::BeginChild("central", size, false);
  first_run_hint();
  if (ImGui::BeginTabBar("views")) {
    for (int i = 0; i < 4; ++i) {
      ImGuiTabItemFlags f = (view_forced_ && view_ == i) ? ImGuiTabItemFlags_SetSelected : 0;
      if (ImGui::BeginTabItem(kViewTitles[i], nullptr, f)) {
        if (!view_forced_) view_ = i;
        ImVec2 avail = ImGui::GetContentRegionAvail();
        switch (i) {
          case 0: heatmap_view(avail); break;
          case 1: rd_view(avail); break;
          case 2: attention_view(avail); break;
          case 3: runs_view(); break;
        }
        ImGui::EndTabItem();
      }
    }
    view_forced_ = false;
    ImGui::EndTabBar();
  }
  ImGui::EndChild();
}

void App::first_run_hint() {
  if (!show_hint_) return;
  ImGui::PushStyleColor(ImGuiCol_ChildBg, IM_COL32(40, 70, 120, 200));
  ImGui::BeginChild("hint", ImVec2(0, ImGui::GetTextLineHeightWithSpacing() * 4.6f), true);
  // The welcome text describes the demo; once the user opened their own dump it says what is shown instead.
  const bool demo = dump_name_.rfind("demo", 0) == 0;
  const std::string what = demo ? "This is a built-in synthetic Qwen2.5-0.5B-shaped KV dump with planted outlier K heads. "
                                : "This is " + (dump_name_.empty() ? std::string("your dump") : dump_name_) + ". ";
  ImGui::TextWrapped(
      "Welcome to kvscope. %sEach cell is one (layer, KV head) under the policy on the left. Hover a cell for exact "
      "values, click it to drill into the head, right-click to keep it in fp16. Move the sliders on the left: "
      "everything re-quantizes in the background. File > Open dump loads another (capture one with "
      "`kvscope dump <model>`).",
      what.c_str());
  if (ImGui::SmallButton("Got it")) show_hint_ = false;
  ImGui::EndChild();
  ImGui::PopStyleColor();
}

void App::heatmap_pair(ImVec2 size, bool interactive) {
  std::vector<views::Heatmap> maps;
  if (report_) {
    if (views::metric_per_kind(metric_)) {
      maps.push_back(views::head_heatmap(*report_, metric_, 'k'));
      maps.push_back(views::head_heatmap(*report_, metric_, 'v'));
    } else {
      maps.push_back(views::head_heatmap(*report_, metric_, 'k'));
    }
  }
  if (maps.empty()) {
    ImGui::TextDisabled(dump_ ? "Quantizing... the heatmap appears when the first job finishes."
                              : "Loading the dump...");
    return;
  }
  std::vector<double> all;
  for (const auto& m : maps) all.insert(all.end(), m.values.begin(), m.values.end());
  bool log = log_scale_ && metric_ != HeadMetric::BitsPerElement;
  views::ValueScale scale = views::fit_scale(all, log ? views::ScaleKind::Log : views::ScaleKind::Linear);
  float bar_w = 90 * settings_.ui_scale;
  float map_w = std::min(260.0f * settings_.ui_scale, (size.x - bar_w) / maps.size() - 8);
  for (size_t i = 0; i < maps.size(); ++i) {
    char kind = i == 0 ? 'k' : 'v';
    views::HeatmapStyle style;
    style.cmap = cmap_;
    style.scale = scale;
    style.show_values = show_values_;
    if (selected_.valid() && (selected_kind_ == kind || maps.size() == 1)) style.selected = selected_;
    for (auto [l, h] : fp16_heads(policy_, kind)) style.marked.push_back({l, h});
    ImGui::BeginGroup();
    views::HeatmapIntent in = views::draw_heatmap(kind == 'k' ? "heat_k" : "heat_v", maps[i], style, ImVec2(map_w, size.y));
    ImGui::EndGroup();
    ImGui::SameLine();
    if (!interactive) continue;
    (kind == 'k' ? layout_k_ : layout_v_) = in.layout;
    if (in.clicked.valid()) {
      selected_ = in.clicked;
      selected_kind_ = kind;
      refresh_profile();
    }
    if (in.right_clicked.valid()) {
      try {
        toggle_head_fp16(policy_, in.right_clicked.row, in.right_clicked.col, kind);
        policy_edited(true);
      } catch (const Error& e) {
        error(e.what());
      }
    }
  }
  views::draw_colorbar("colorbar", scale, cmap_, ImVec2(bar_w, size.y));
}

void App::heatmap_view(ImVec2 size) {
  float s = settings_.ui_scale;
  ImGui::SetNextItemWidth(230 * s);
  if (ImGui::BeginCombo("metric", views::head_metric_name(metric_))) {
    for (HeadMetric hm : views::kHeadMetrics)
      if (ImGui::Selectable(views::head_metric_name(hm), hm == metric_)) metric_ = hm;
    ImGui::EndCombo();
  }
  ImGui::SameLine();
  ImGui::Checkbox("log scale", &log_scale_);
  ImGui::SameLine();
  int c = static_cast<int>(cmap_);
  ImGui::SetNextItemWidth(110 * s);
  const char* cmaps[] = {"viridis", "magma"};
  if (ImGui::Combo("colormap", &c, cmaps, 2)) cmap_ = static_cast<views::Colormap>(c);
  ImGui::SameLine();
  ImGui::Checkbox("values", &show_values_);
  ImGui::SameLine();
  if (ImGui::Button("Save figure")) ask_figure("heatmap");

  ImVec2 avail = ImGui::GetContentRegionAvail();
  float detail_w = std::max(300.0f * s, avail.x * 0.45f);
  ImGui::BeginChild("maps", ImVec2(avail.x - detail_w, avail.y), false);
  heatmap_pair(ImGui::GetContentRegionAvail(), true);
  ImGui::EndChild();
  ImGui::SameLine();
  ImGui::BeginChild("detail", ImVec2(0, avail.y), true);
  if (profile_) {
    bool kept = head_kept_fp16(policy_, profile_->layer, profile_->head, profile_->kind);
    views::HeadDetailIntent in = views::draw_head_detail(*profile_, kept, cmap_, ImGui::GetContentRegionAvail().x);
    if (in.close) {
      selected_ = {};
      profile_.reset();
    } else if (in.toggle_fp16) {
      try {
        toggle_head_fp16(policy_, profile_->layer, profile_->head, profile_->kind);
        policy_edited(true);
      } catch (const Error& e) {
        error(e.what());
      }
    }
  } else {
    ImGui::TextWrapped("Click a heatmap cell to drill into that head: per-channel max |K| before and after RoPE, "
                       "the per-token error strip and the head's outlier channels.");
  }
  if (report_) {
    ImGui::Separator();
    ImGui::Text("%s: %.3f bits/element, %.0f B/token (fp16 %.0f)", report_->policy_name.c_str(), report_->bits_per_element,
                report_->bytes_per_token, report_->fp16_bytes_per_token);
    // attn_queries == 0: the attention phase has not delivered yet (tensor metrics come first).
    if (report_->attn_queries > 0)
      ImGui::Text("K NMSE %.4g   V NMSE %.4g   attention cos %.5f (min %.4f)", report_->k_nmse, report_->v_nmse,
                  report_->attn_cos_mean, report_->attn_cos_min);
    else
      ImGui::Text("K NMSE %.4g   V NMSE %.4g   attention cos: computing...", report_->k_nmse, report_->v_nmse);
  }
  ImGui::EndChild();
  (void)size;
}

views::PlotData App::rd_data() const { return views::rd_plot(runs_.rows(), rd_metric_); }

void App::rd_view(ImVec2 size) {
  (void)size;
  const char* metrics[] = {"K NMSE", "V NMSE", "1 - attention cosine", "greedy match (replay)", "next-token KL (replay)"};
  int m = static_cast<int>(rd_metric_);
  ImGui::SetNextItemWidth(220 * settings_.ui_scale);
  if (ImGui::Combo("y axis", &m, metrics, IM_ARRAYSIZE(metrics))) rd_metric_ = static_cast<views::RdMetric>(m);
  ImGui::SameLine();
  ImGui::BeginDisabled(!dump_);
  if (ImGui::Button("Sweep all presets on this dump")) start_sweep();
  ImGui::EndDisabled();
  ImGui::SameLine();
  if (ImGui::Button("Save figure")) ask_figure("rd");
  if (runs_.rows().empty()) {
    ImGui::TextDisabled("No runs yet: sweep the presets, open a run store, or press \"Save run\" in the policy editor.");
    return;
  }
  views::PlotData d = rd_data();
  views::PlotIntent in = views::draw_plot("rd", d, ImGui::GetContentRegionAvail());
  if (in.clicked.valid()) {
    open_run(d.series[in.clicked.series].ids[in.clicked.index]);
  }
}

views::PlotData App::attention_data() {
  std::vector<std::shared_ptr<const QuantizeReport>> keep;  // alive until the plot data is built
  std::vector<views::NamedReport> named;
  if (report_) named.push_back({"live: " + (policy_.name.empty() ? std::string("(custom)") : policy_.name), report_.get()});
  for (const auto& row : runs_.rows())
    if (std::find(attn_runs_.begin(), attn_runs_.end(), row.id) != attn_runs_.end())
      if (auto rep = runs_.report(row.id)) {
        keep.push_back(rep);
        named.push_back({"run " + std::to_string(row.id) + ": " + row.policy, rep.get()});
      }
  return views::attention_by_layer(named, attn_nmse_);
}

void App::attention_view(ImVec2 size) {
  (void)size;
  ImGui::Checkbox("NMSE instead of cosine", &attn_nmse_);
  ImGui::SameLine();
  if (ImGui::Button("Save figure")) ask_figure("attention");
  if (!runs_.rows().empty()) {
    ImGui::SameLine();
    ImGui::SetNextItemWidth(260 * settings_.ui_scale);
    if (ImGui::BeginCombo("overlay runs", (std::to_string(attn_runs_.size()) + " selected").c_str())) {
      for (const auto& row : runs_.rows()) {
        bool on = std::find(attn_runs_.begin(), attn_runs_.end(), row.id) != attn_runs_.end();
        std::string label = std::to_string(row.id) + "  " + row.policy + "  " + row.tag;
        if (ImGui::Checkbox(label.c_str(), &on)) {
          if (on) attn_runs_.push_back(row.id);
          else attn_runs_.erase(std::remove(attn_runs_.begin(), attn_runs_.end(), row.id), attn_runs_.end());
        }
      }
      ImGui::EndCombo();
    }
  }
  if (!report_ && attn_runs_.empty()) {
    ImGui::TextDisabled("Waiting for a quantization result.");
    return;
  }
  views::draw_plot("attention", attention_data(), ImGui::GetContentRegionAvail());
}

void App::runs_view() {
  std::string source = runs_.has_store() ? runs_.store_path() : "this session (no run store open)";
  views::RunsTableIntent in = views::draw_runs_table(runs_.rows(), runs_state_, source);
  try {
    if (in.refresh) runs_.refresh();
    if (in.edit_run) runs_.set_tags_and_note(*in.edit_run, in.new_tag, in.new_note);
    if (in.delete_selected) {
      for (int64_t id : runs_state_.selected) runs_.remove(id);
      live_status_ = "deleted " + std::to_string(runs_state_.selected.size()) + " run(s)";
      runs_state_.selected.clear();
    }
    if (in.open_run) open_run(*in.open_run);
    if (in.export_file || in.export_clipboard) {
      static const char* kFormats[] = {"csv", "md", "tex"};
      std::vector<int64_t> ids(runs_state_.selected.begin(), runs_state_.selected.end());
      std::string text = runs_.export_text(ids, kFormats[runs_state_.export_format], runs_state_.compare);
      if (in.export_clipboard) {
        ImGui::SetClipboardText(text.c_str());
        live_status_ = "copied " + std::to_string(ids.size()) + " run(s) to the clipboard";
      } else {
        if (runs_state_.export_path.empty()) fail("export", "enter a file path first");
        std::string tmp = runs_state_.export_path + ".tmp";
        {
          std::ofstream out(tmp, std::ios::binary);
          if (!out) fail(runs_state_.export_path, "cannot write the export");
          out << text;
        }
        std::filesystem::rename(tmp, runs_state_.export_path);
        live_status_ = "exported to " + runs_state_.export_path;
      }
    }
  } catch (const std::exception& e) {
    error(e.what());
  }
}

void App::jobs_panel(ImVec2 size) {
  ImGui::BeginChild("jobs", size, true);
  views::JobsIntent in = views::draw_jobs(runner_.rows());
  for (uint64_t id : in.cancel) runner_.cancel(id);
  if (in.clear_finished) runner_.clear_finished();
  ImGui::EndChild();
}

void App::status_bar() {
  std::string s;
  char buf[256];
  if (dump_) {
    const DumpShape& d = dump_->shape;
    std::snprintf(buf, sizeof buf, "%d x %d x %d tokens", d.layers, d.kv_heads, d.tokens);
    s += buf;
  }
  if (report_) {
    double ratio = report_->bytes_per_token > 0 ? report_->fp16_bytes_per_token / report_->bytes_per_token : 0;
    std::snprintf(buf, sizeof buf, "  |  %s  %.3f bits/elem  %.0f B/token (%.1fx smaller)  K NMSE %.3g",
                  report_->policy_name.c_str(), report_->bits_per_element, report_->bytes_per_token, ratio,
                  report_->k_nmse);
    s += buf;
    if (report_->attn_queries > 0) std::snprintf(buf, sizeof buf, "  attn cos %.4f", report_->attn_cos_mean);
    else std::snprintf(buf, sizeof buf, "  attn cos ...");
    s += buf;
  }
  if (last_latency_ms_ >= 0) {
    std::snprintf(buf, sizeof buf, "  |  last refresh %.0f ms", last_latency_ms_);
    s += buf;
  }
  std::snprintf(buf, sizeof buf, "  |  %.0f fps%s", fps_, runner_.busy() ? "  |  working..." : "");
  s += buf;
  ImGui::TextUnformatted(s.c_str());
}

void App::dialogs() {
  if (open_dump_popup_) {
    ImGui::OpenPopup("Open dump");
    open_dump_popup_ = false;
  }
  if (ImGui::BeginPopupModal("Open dump", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    ImGui::TextUnformatted("Path of a KV dump (.safetensors):");
    ImGui::SetNextItemWidth(520 * settings_.ui_scale);
    bool enter = ImGui::InputText("##path", &open_path_, ImGuiInputTextFlags_EnterReturnsTrue);
    for (const auto& r : settings_.recent_dumps)
      if (ImGui::Selectable(r.c_str())) open_path_ = r;
    if (ImGui::Button("Open") || enter) {
      if (!open_path_.empty()) open_dump(open_path_);
      ImGui::CloseCurrentPopup();
    }
    ImGui::SameLine();
    if (ImGui::Button("Cancel")) ImGui::CloseCurrentPopup();
    ImGui::EndPopup();
  }
  if (figure_popup_) {
    ImGui::OpenPopup("Save figure");
    figure_popup_ = false;
  }
  if (ImGui::BeginPopupModal("Save figure", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    ImGui::Text("Save the %s plot as a PNG", figure_draft_.view.c_str());
    ImGui::SetNextItemWidth(420 * settings_.ui_scale);
    ImGui::InputText("file", &figure_draft_.path);
    int fw, fh;
    glfwGetFramebufferSize(window_, &fw, &fh);
    ImGui::SetNextItemWidth(120 * settings_.ui_scale);
    ImGui::InputInt("width", &figure_draft_.w, 50);
    ImGui::SetNextItemWidth(120 * settings_.ui_scale);
    ImGui::InputInt("height", &figure_draft_.h, 50);
    figure_draft_.w = std::clamp(figure_draft_.w, 200, fw);  // drawn in the window: at most its size
    figure_draft_.h = std::clamp(figure_draft_.h, 150, fh);
    ImGui::TextDisabled("up to %d x %d (the window size)", fw, fh);
    if (ImGui::Button("Save")) {
      figure_ = figure_draft_;
      ImGui::CloseCurrentPopup();
    }
    ImGui::SameLine();
    if (ImGui::Button("Cancel")) ImGui::CloseCurrentPopup();
    ImGui::EndPopup();
  }
  if (!errors_.empty() && script_.empty() && !ImGui::IsPopupOpen("Error")) ImGui::OpenPopup("Error");
  if (ImGui::BeginPopupModal("Error", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    if (!errors_.empty()) ImGui::TextUnformatted(errors_.front().c_str());
    if (ImGui::Button("OK")) {
      if (!errors_.empty()) errors_.erase(errors_.begin());
      ImGui::CloseCurrentPopup();
    }
    ImGui::EndPopup();
  }
}

void App::figure_overlay() {
  ImGui::SetNextWindowPos(ImVec2(0, 0));
  ImGui::SetNextWindowSize(ImVec2(static_cast<float>(figure_->w), static_cast<float>(figure_->h)));
  ImGuiWindowFlags flags = ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoSavedSettings | ImGuiWindowFlags_NoMove |
                           ImGuiWindowFlags_NoFocusOnAppearing;
  ImGui::SetNextWindowBgAlpha(1.0f);
  ImGui::Begin("##figure", nullptr, flags);
  ImVec2 avail = ImGui::GetContentRegionAvail();
  if (figure_->view == "heatmap") heatmap_pair(avail, false);
  else if (figure_->view == "rd") views::draw_plot("rd_fig", rd_data(), avail);
  else views::draw_plot("attn_fig", attention_data(), avail);
  ImGui::End();
  figure_drawn_ = true;
}

// ---------------------------------------------------------------------------------------------
// Script

void App::step_script() {
  if (inject_release_) {
    inject_button_ = -1;
    inject_release_ = false;
  } else if (inject_button_ >= 0) {
    inject_release_ = true;  // pressed this coming frame, released the next
  }
  if (script_failed_ || script_pos_ >= script_.size()) return;
  if (!errors_.empty()) {  // a failed job or action ends a scripted run with its message
    for (const auto& e : errors_) std::fprintf(stderr, "kvscope: error: %s\n", e.c_str());
    errors_.clear();
    script_failed_ = true;
    return;
  }
  if (wait_frames_ > 0) {
    --wait_frames_;
    return;
  }
  if (inject_button_ >= 0) return;  // let a click complete first
  const ScriptAction& a = script_[script_pos_];
  try {
    if (script_action(a)) ++script_pos_;
  } catch (const Error& e) {
    std::fprintf(stderr, "kvscope: error: %s\n", e.what());
    script_failed_ = true;
  }
}

bool App::script_action(const ScriptAction& a) {
  std::string where = opts_.script + ":" + std::to_string(a.line);
  const auto& v = a.verb;
  // Scripted edits count as user input, so pacing behaves as it would for a person.
  if (v == "set" || v == "preset" || v == "hover" || v == "click" || v == "rclick" || v == "view") note_input();
  auto arg_int = [&](size_t i) {
    try {
      return std::stoi(a.args[i]);
    } catch (const std::exception&) {
      fail(where, "'{}' is not an integer", a.args[i]);
    }
  };
  if (v == "view") {
    for (int i = 0; i < 4; ++i)
      if (a.args[0] == kViews[i]) {
        view_ = i;
        view_forced_ = true;
        wait_frames_ = 2;  // let the layout settle before hovering
        return true;
      }
    fail(where, "unknown view '{}' (heatmap, rd, attention, runs)", a.args[0]);
  }
  if (v == "rd_metric") {
    for (views::RdMetric m : views::kRdMetrics)
      if (a.args[0] == views::rd_metric_key(m)) {
        rd_metric_ = m;
        return true;
      }
    fail(where, "unknown rd_metric '{}' (k_nmse, v_nmse, attn_cos, greedy, kl)", a.args[0]);
  }
  if (v == "metric") {
    for (HeadMetric m : views::kHeadMetrics)
      if (a.args[0] == metric_key(m)) {
        metric_ = m;
        return true;
      }
    fail(where, "unknown metric '{}' (nmse, mse, cos, attn, bits)", a.args[0]);
  }
  if (v == "scale") {
    if (a.args[0] != "log" && a.args[0] != "linear") fail(where, "scale is log or linear");
    log_scale_ = a.args[0] == "log";
    return true;
  }
  if (v == "colormap") {
    if (a.args[0] != "viridis" && a.args[0] != "magma") fail(where, "colormap is viridis or magma");
    cmap_ = a.args[0] == "magma" ? views::Colormap::Magma : views::Colormap::Viridis;
    return true;
  }
  if (v == "theme") {
    if (a.args[0] != "dark" && a.args[0] != "light") fail(where, "theme is dark or light");
    settings_.dark = a.args[0] == "dark";
    apply_style();
    return true;
  }
  if (v == "ui_scale") {
    settings_.ui_scale = std::clamp(std::stof(a.args[0]), 0.5f, 3.0f);
    apply_style();
    return true;
  }
  if (v == "preset") {
    policy_ = load_preset(a.args[0]);
    policy_edited(true);
    return true;
  }
  if (v == "set") {
    set_field(a.args[0], a.args[1], where);
    return true;
  }
  if (v == "hover" || v == "click" || v == "rclick") {
    char kind = a.args[0] == "v" ? 'v' : 'k';
    const views::GridLayout& g = kind == 'k' ? layout_k_ : layout_v_;
    int l = arg_int(1), h = arg_int(2);
    if (g.rows == 0) fail(where, "no heatmap on screen yet (add `view heatmap` and `wait_jobs` first)");
    if (l < 0 || l >= g.rows || h < 0 || h >= g.cols) fail(where, "no cell ({}, {}) in a {}x{} heatmap", l, h, g.rows, g.cols);
    views::Rect r = g.cell_rect(l, h);
    inject_pos_ = ImVec2((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2);
    if (v != "hover") inject_button_ = v == "click" ? 0 : 1;
    wait_frames_ = 1;
    return true;
  }
  if (v == "sweep") {
    start_sweep();
    return true;
  }
  if (v == "replay") {
    auto it = std::find_if(models_.begin(), models_.end(), [&](const ModelEntry& m) { return m.id == a.args[0]; });
    if (it == models_.end()) fail(where, "no model '{}' found (HF cache, $KVSCOPE_MODEL_PATH)", a.args[0]);
    replay_spec_ = a.args[1];
    replay_job(*it);
    return true;
  }
  if (v == "capture") {
    auto it = std::find_if(models_.begin(), models_.end(), [&](const ModelEntry& m) { return m.id == a.args[0]; });
    if (it == models_.end()) fail(where, "no model '{}' found (HF cache, $KVSCOPE_MODEL_PATH)", a.args[0]);
    if (!it->error.empty()) fail(where, "model '{}' is unusable: {}", a.args[0], it->error);
    capture_tokens_ = arg_int(1);
    capture_dump_job(*it);
    return true;
  }
  if (v == "save_run") {
    save_run();
    return true;
  }
  if (v == "wait_jobs") {
    if (!wait_jobs_since_) wait_jobs_since_ = Clock::now();
    // Idle: nothing running or due. (No dump after a failed load is idle too: the error ends the script.)
    bool idle = !runner_.busy() && !requant_due_ && (!dump_ || report_);
    if (!idle) {
      if (seconds_since(*wait_jobs_since_) > 300) fail(where, "jobs still running after 300 s");
      return false;
    }
    wait_jobs_since_.reset();
    wait_frames_ = 2;  // one frame to draw the result, one to settle tooltips
    return true;
  }
  if (v == "wait_frames") {
    wait_frames_ = arg_int(0);
    return true;
  }
  if (v == "screenshot") {
    screenshot_path_ = a.args[0];
    return true;
  }
  if (v == "save_figure") {
    figure_ = FigureRequest{a.args[0], a.args[1], arg_int(2), arg_int(3)};
    wait_frames_ = 1;
    return true;
  }
  if (v == "perf_begin") {
    perf_on_ = true;
    frame_ms_.clear();
    ui_ms_.clear();
    interval_ms_.clear();
    latency_ms_.clear();
    attn_latency_ms_.clear();
    return true;
  }
  if (v == "perf_end") {
    perf_on_ = false;
    nlohmann::json j = {{"frames", frame_ms_.size()},
                        {"frame_work_ms_median", percentile(frame_ms_, 0.5)},
                        {"frame_ui_ms_median", percentile(ui_ms_, 0.5)},
                        {"frame_ui_ms_p99", percentile(ui_ms_, 0.99)},
                        {"frame_work_ms_p99", percentile(frame_ms_, 0.99)},
                        {"frame_interval_ms_median", percentile(interval_ms_, 0.5)},
                        {"frame_interval_ms_p99", percentile(interval_ms_, 0.99)},
                        {"frame_interval_ms_max", interval_ms_.empty() ? 0.0 : *std::max_element(interval_ms_.begin(), interval_ms_.end())},
                        {"refresh_latency_ms", latency_ms_},
                        {"attention_latency_ms", attn_latency_ms_}};
    std::ofstream out(a.args[0]);
    if (!out) fail(a.args[0], "cannot write the measurement");
    out << json_text(j, 2) << "\n";
    return true;
  }
  if (v == "open") {
    open_dump(a.args[0]);
    return true;
  }
  if (v == "quit") {
    quit_ = true;
    return true;
  }
  fail(where, "unknown action '{}'", v);
}

void App::set_field(const std::string& field, const std::string& value, const std::string& where) {
  double x = 0;
  try {
    x = std::stod(value);
  } catch (const std::exception&) {
    if (field != "method") fail(where, "'{}' is not a number", value);
  }
  int n = static_cast<int>(std::lround(x));
  if (field == "k.bits") policy_.k.bits = n;
  else if (field == "v.bits") policy_.v.bits = n;
  else if (field == "bits") policy_.k.bits = policy_.v.bits = n;
  else if (field == "group_size") policy_.k.group_size = policy_.v.group_size = n;
  else if (field == "residual") policy_.residual = n;
  else if (field == "sink_tokens") policy_.sink_tokens = n;
  else if (field == "clip_ratio") policy_.k.clip_ratio = policy_.v.clip_ratio = x;
  else if (field == "outlier_ratio") {
    policy_.outliers.rule = OutlierSelect::Rule::MseOverMedian;
    policy_.outliers.ratio = x;
  } else if (field == "method") {
    const QuantMethod* m = find_method(value);
    if (!m) fail(where, "unknown method '{}'", value);
    policy_.method = m;
  } else {
    fail(where, "unknown field '{}' (k.bits v.bits bits group_size residual sink_tokens clip_ratio outlier_ratio method)", field);
  }
  policy_edited(true);  // a scripted set is a slider released
}

void App::write_layout_json(const std::string& png_path) {
  auto grid = [](const views::GridLayout& g) {
    return nlohmann::json{{"x0", g.area.x0}, {"y0", g.area.y0}, {"x1", g.area.x1}, {"y1", g.area.y1},
                          {"rows", g.rows},  {"cols", g.cols},  {"gap", g.gap}};
  };
  nlohmann::json j = {{"view", kViews[view_]},
                      {"metric", metric_key(metric_)},
                      {"colormap", views::colormap_name(cmap_)},
                      {"log_scale", log_scale_},
                      {"dark", settings_.dark}};
  if (view_ == 0) j["heatmaps"] = {{"k", grid(layout_k_)}, {"v", grid(layout_v_)}};
  if (view_ == 1) {
    nlohmann::json series = nlohmann::json::array();
    for (const auto& s : rd_data().series) series.push_back({{"name", s.name}, {"points", s.x.size()}});
    j["rd"] = {{"metric", views::rd_metric_key(rd_metric_)}, {"series", series}};
  }
  if (!replay_lines_.empty()) j["replay"] = replay_lines_;
  if (report_) j["report"] = {{"policy", report_->policy_name}, {"bits_per_element", report_->bits_per_element}};
  if (selected_.valid()) j["selected"] = {selected_kind_ == 'k' ? "k" : "v", selected_.row, selected_.col};
  std::ofstream out(png_path + ".json");
  out << json_text(j, 2) << "\n";
}

}  // namespace

int run_gui(const GuiOptions& opts) {
  App app(opts);
  return app.run();
}

}  // namespace kvscope::gui
