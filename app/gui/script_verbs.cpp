#include "app/gui/script_verbs.h"

#include <algorithm>
#include <cstdio>

#include "app/gui/shell.h"
#include "app/gui/window.h"
#include "core/policy/policy.h"
#include "core/util/error.h"

namespace kvscope::gui {

namespace {

using views::HeadMetric;

int arg_int(const ScriptAction& a, size_t i, const std::string& where) {
  try {
    return std::stoi(a.args[i]);
  } catch (const std::exception&) {
    fail(where, "'{}' is not an integer", a.args[i]);
  }
}

double seconds_since(Workspace::Clock::time_point t) {
  return std::chrono::duration<double>(Workspace::Clock::now() - t).count();
}

const ModelEntry& find_model(const Shell& s, const std::string& id, const std::string& where) {
  auto it = std::find_if(s.models.begin(), s.models.end(), [&](const ModelEntry& m) { return m.id == id; });
  if (it == s.models.end()) fail(where, "no model '{}' found (HF cache, $KVSCOPE_MODEL_PATH)", id);
  return *it;
}

void apply_style(Shell& s) {
  if (s.window) s.window->apply_style(s.settings.dark, s.settings.ui_scale);
}

// Mouse verbs: move (and click) the scripted mouse to the centre of a heatmap cell.
bool point_at_cell(Shell& s, const ScriptAction& a, const std::string& where) {
  Window::note_input();  // scripted edits count as user input, so pacing behaves as it would for a person
  char kind = a.args[0] == "v" ? 'v' : 'k';
  const views::GridLayout& g = kind == 'k' ? s.layout_k : s.layout_v;
  int l = arg_int(a, 1, where), h = arg_int(a, 2, where);
  if (g.rows == 0) fail(where, "no heatmap on screen yet (add `view heatmap` and `wait_jobs` first)");
  if (l < 0 || l >= g.rows || h < 0 || h >= g.cols) fail(where, "no cell ({}, {}) in a {}x{} heatmap", l, h, g.rows, g.cols);
  views::Rect r = g.cell_rect(l, h);
  s.script.inject_pos = ImVec2((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2);
  if (a.verb != "hover") s.script.inject_button = a.verb == "click" ? 0 : 1;
  s.script.wait_frames = 1;
  return true;
}

const std::vector<ScriptVerb> kVerbs = {
    {"view", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       Window::note_input();
       for (int i = 0; i < 4; ++i)
         if (a.args[0] == kViews[i]) {
           s.show_view(i);
           s.script.wait_frames = 2;  // let the layout settle before hovering
           return true;
         }
       fail(where, "unknown view '{}' (heatmap, rd, attention, runs)", a.args[0]);
     }},
    {"metric", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       for (HeadMetric m : views::kHeadMetrics)
         if (a.args[0] == metric_key(m)) {
           s.metric = m;
           return true;
         }
       fail(where, "unknown metric '{}' (nmse, mse, cos, attn, bits)", a.args[0]);
     }},
    {"scale", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       if (a.args[0] != "log" && a.args[0] != "linear") fail(where, "scale is log or linear");
       s.log_scale = a.args[0] == "log";
       return true;
     }},
    {"colormap", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       if (a.args[0] != "viridis" && a.args[0] != "magma") fail(where, "colormap is viridis or magma");
       s.cmap = a.args[0] == "magma" ? views::Colormap::Magma : views::Colormap::Viridis;
       return true;
     }},
    {"theme", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       if (a.args[0] != "dark" && a.args[0] != "light") fail(where, "theme is dark or light");
       s.settings.dark = a.args[0] == "dark";
       apply_style(s);
       return true;
     }},
    {"ui_scale", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       float x = 0;
       try {
         x = std::stof(a.args[0]);
       } catch (const std::exception&) {
         fail(where, "'{}' is not a number", a.args[0]);
       }
       s.settings.ui_scale = std::clamp(x, 0.5f, 3.0f);
       apply_style(s);
       return true;
     }},
    {"preset", 1,
     [](Shell& s, const ScriptAction& a, const std::string&) {
       Window::note_input();
       s.ws.policy() = load_preset(a.args[0]);
       s.ws.policy_edited(true);
       return true;
     }},
    {"policy_script", 1,
     [](Shell& s, const ScriptAction& a, const std::string&) {
       Window::note_input();
       s.ws.open_policy_script(a.args[0]);  // planned and watched; errors go to the error dialog
       return true;
     }},
    {"set", 2,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       Window::note_input();
       s.ws.set_field(a.args[0], a.args[1], where);
       return true;
     }},
    {"hover", 3, point_at_cell},
    {"click", 3, point_at_cell},
    {"rclick", 3, point_at_cell},
    {"sweep", 0,
     [](Shell& s, const ScriptAction&, const std::string&) {
       s.ws.start_sweep();
       return true;
     }},
    {"capture", 2,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       const ModelEntry& m = find_model(s, a.args[0], where);
       if (!m.error.empty()) fail(where, "model '{}' is unusable: {}", a.args[0], m.error);
       s.capture_tokens = arg_int(a, 1, where);
       s.ws.capture(m, s.capture_text, s.capture_tokens);
       return true;
     }},
    {"replay", 2,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       const ModelEntry& m = find_model(s, a.args[0], where);
       s.replay_spec = a.args[1];
       s.ws.replay(m, s.replay_spec);
       return true;
     }},
    {"select_run", 1,  // adds a run to the runs table's selection (the KLD CDF overlays the selected runs)
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       s.runs_state.selected.insert(arg_int(a, 0, where));
       return true;
     }},
    {"save_run", 0,
     [](Shell& s, const ScriptAction&, const std::string&) {
       s.ws.save_run();
       return true;
     }},
    {"wait_jobs", 0,
     [](Shell& s, const ScriptAction&, const std::string& where) {
       if (!s.script.wait_jobs_since) s.script.wait_jobs_since = Workspace::Clock::now();
       // Idle: nothing running or due. (No dump after a failed load is idle too: the error ends the script.)
       if (!s.ws.idle()) {
         if (seconds_since(*s.script.wait_jobs_since) > 300) fail(where, "jobs still running after 300 s");
         return false;
       }
       s.script.wait_jobs_since.reset();
       s.script.wait_frames = 2;  // one frame to draw the result, one to settle tooltips
       return true;
     }},
    {"wait_frames", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       s.script.wait_frames = arg_int(a, 0, where);
       return true;
     }},
    {"screenshot", 1,
     [](Shell& s, const ScriptAction& a, const std::string&) {
       s.screenshot_path = a.args[0];
       return true;
     }},
    {"save_figure", 4,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       s.figure = FigureRequest{a.args[0], a.args[1], arg_int(a, 2, where), arg_int(a, 3, where)};
       s.script.wait_frames = 1;
       return true;
     }},
    {"perf_begin", 0,
     [](Shell& s, const ScriptAction&, const std::string&) {
       s.perf.begin();
       return true;
     }},
    {"perf_end", 1,
     [](Shell& s, const ScriptAction& a, const std::string&) {
       s.perf.end(a.args[0]);
       return true;
     }},
    {"open", 1,
     [](Shell& s, const ScriptAction& a, const std::string&) {
       s.ws.open_dump(a.args[0]);
       return true;
     }},
    {"rd_metric", 1,
     [](Shell& s, const ScriptAction& a, const std::string& where) {
       for (views::RdMetric m : views::kRdMetrics)
         if (a.args[0] == views::rd_metric_key(m)) {
           s.rd_metric = m;
           return true;
         }
       fail(where, "unknown rd_metric '{}' (k_nmse, v_nmse, attn_cos, greedy, kl)", a.args[0]);
     }},
    {"quit", 0,
     [](Shell& s, const ScriptAction&, const std::string&) {
       s.script.quit = true;
       return true;
     }},
};

}  // namespace

const std::vector<ScriptVerb>& script_verbs() { return kVerbs; }

const ScriptVerb* find_script_verb(const std::string& verb) {
  for (const auto& v : kVerbs)
    if (verb == v.verb) return &v;
  return nullptr;
}

void step_script(Shell& s) {
  ScriptRun& sc = s.script;
  if (sc.inject_release) {
    sc.inject_button = -1;
    sc.inject_release = false;
  } else if (sc.inject_button >= 0) {
    sc.inject_release = true;  // pressed this coming frame, released the next
  }
  if (sc.failed || sc.done()) return;
  auto& errors = s.ws.errors();
  if (!errors.empty()) {  // a failed job or action ends a scripted run with its message
    for (const auto& e : errors) std::fprintf(stderr, "kvscope: error: %s\n", e.c_str());
    errors.clear();
    sc.failed = true;
    return;
  }
  if (sc.wait_frames > 0) {
    --sc.wait_frames;
    return;
  }
  if (sc.inject_button >= 0) return;  // let a click complete first
  const ScriptAction& a = sc.actions[sc.pos];
  try {
    const ScriptVerb* verb = find_script_verb(a.verb);
    if (!verb) fail(s.opts.script + ":" + std::to_string(a.line), "unknown action '{}'", a.verb);
    if (verb->run(s, a, s.opts.script + ":" + std::to_string(a.line))) ++sc.pos;
  } catch (const Error& e) {
    std::fprintf(stderr, "kvscope: error: %s\n", e.what());
    sc.failed = true;
  }
}

}  // namespace kvscope::gui
