// Sidebar: the run store (path, open another, recent ones, run count).
#include <imgui.h>
#include <imgui_stdlib.h>

#include "app/gui/shell.h"
#include "core/util/error.h"

namespace kvscope::gui {

void store_panel(Shell& s) {
  RunList& runs = s.ws.runs();
  auto open = [&](const std::string& path) {
    try {
      s.ws.open_store(path);
    } catch (const Error& e) {
      s.error(e.what());
    }
  };
  ImGui::TextDisabled("Run store");
  ImGui::TextWrapped("%s", runs.has_store() ? runs.store_path().c_str() : "(none open; Save run opens the default)");
  ImGui::SetNextItemWidth(-60 * s.settings.ui_scale);
  ImGui::InputTextWithHint("##db", "database path", &s.db_input);
  ImGui::SameLine();
  if (ImGui::SmallButton("Open##db") && !s.db_input.empty()) open(s.db_input);
  for (const auto& r : s.settings.recent_dbs)
    if (ImGui::Selectable(r.c_str(), r == runs.store_path())) {
      open(std::string(r));  // a copy: opening reorders the recent list
      break;
    }
  ImGui::TextDisabled("%d runs", static_cast<int>(runs.rows().size()));
}

}  // namespace kvscope::gui
