#include "app/gui/settings.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/file.h"
#include "core/util/json_text.h"

namespace kvscope::gui {

std::string settings_path() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  std::filesystem::path base;
  if (xdg && *xdg) base = xdg;
  else if (const char* home = std::getenv("HOME"); home && *home) base = std::filesystem::path(home) / ".config";
  else base = ".";
  return (base / "kvscope" / "settings.json").string();
}

Settings load_settings(const std::string& path) {
  Settings s;
  std::ifstream in(path);
  if (!in) return s;
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return s;  // unreadable: fall back to defaults, the next save repairs it
  s.first_run = false;
  auto get = [&](const char* key, auto& field) {
    if (auto it = j.find(key); it != j.end()) {
      try {
        it->get_to(field);
      } catch (const nlohmann::json::exception&) {
        // Wrong type for one key: keep that default, keep the rest.
      }
    }
  };
  get("dark", s.dark);
  get("ui_scale", s.ui_scale);
  get("window_w", s.window_w);
  get("window_h", s.window_h);
  get("sidebar_w", s.sidebar_w);
  get("jobs_h", s.jobs_h);
  get("view", s.view);
  get("metric", s.metric);
  get("colormap", s.colormap);
  get("log_scale", s.log_scale);
  get("recent_dumps", s.recent_dumps);
  get("recent_dbs", s.recent_dbs);
  s.ui_scale = std::clamp(s.ui_scale, 0.5f, 3.0f);
  s.window_w = std::clamp(s.window_w, 640, 8192);
  s.window_h = std::clamp(s.window_h, 480, 8192);
  s.sidebar_w = std::clamp(s.sidebar_w, 150.0f, 2000.0f);
  s.jobs_h = std::clamp(s.jobs_h, 40.0f, 1000.0f);
  return s;
}

void save_settings(const std::string& path, const Settings& s) {
  nlohmann::json j = {{"dark", s.dark},
                      {"ui_scale", s.ui_scale},
                      {"window_w", s.window_w},
                      {"window_h", s.window_h},
                      {"sidebar_w", s.sidebar_w},
                      {"jobs_h", s.jobs_h},
                      {"view", s.view},
                      {"metric", s.metric},
                      {"colormap", s.colormap},
                      {"log_scale", s.log_scale},
                      {"recent_dumps", s.recent_dumps},
                      {"recent_dbs", s.recent_dbs}};
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  write_file_atomic(path, json_text(j, 2) + "\n");
}

void remember_recent(std::vector<std::string>& list, const std::string& entry, size_t limit) {
  list.erase(std::remove(list.begin(), list.end(), entry), list.end());
  list.insert(list.begin(), entry);
  if (list.size() > limit) list.resize(limit);
}

}  // namespace kvscope::gui
