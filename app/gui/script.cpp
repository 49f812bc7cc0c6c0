#include "app/gui/script.h"

#include <fstream>
#include <map>
#include <sstream>

#include "core/util/error.h"

namespace kvscope::gui {

std::vector<ScriptAction> parse_script_text(const std::string& text, const std::string& where) {
  static const std::map<std::string, int> kArity = {
      {"view", 1},       {"metric", 1},   {"scale", 1},     {"colormap", 1},   {"theme", 1},
      {"ui_scale", 1},   {"preset", 1},   {"set", 2},       {"hover", 3},      {"click", 3},
      {"rclick", 3},     {"sweep", 0},    {"capture", 2},   {"replay", 2},   {"save_run", 0},  {"wait_jobs", 0},  {"wait_frames", 1},
      {"screenshot", 1}, {"save_figure", 4}, {"perf_begin", 0}, {"perf_end", 1}, {"open", 1},
      {"rd_metric", 1}, {"quit", 0}};
  std::vector<ScriptAction> out;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    ScriptAction a;
    a.line = n;
    if (!(words >> a.verb)) continue;
    for (std::string w; words >> w;) a.args.push_back(w);
    auto it = kArity.find(a.verb);
    if (it == kArity.end()) fail(where + ":" + std::to_string(n), "unknown script action '{}'", a.verb);
    if (static_cast<int>(a.args.size()) != it->second)
      fail(where + ":" + std::to_string(n), "'{}' takes {} argument(s), got {}", a.verb, it->second, a.args.size());
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<ScriptAction> load_script(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, "cannot open the script");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_script_text(ss.str(), path);
}

}  // namespace kvscope::gui
