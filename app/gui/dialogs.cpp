// Modal dialogs: open a dump, save a figure, show an error.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>

#include "app/gui/shell.h"
#include "app/gui/window.h"

namespace kvscope::gui {

void dialogs(Shell& s) {
  const float sc = s.settings.ui_scale;
  if (s.open_dump_popup) {
    ImGui::OpenPopup("Open dump");
    s.open_dump_popup = false;
  }
  if (ImGui::BeginPopupModal("Open dump", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    ImGui::TextUnformatted("Path of a KV dump (.safetensors):");
    ImGui::SetNextItemWidth(520 * sc);
    bool enter = ImGui::InputText("##path", &s.open_path, ImGuiInputTextFlags_EnterReturnsTrue);
    for (const auto& r : s.settings.recent_dumps)
      if (ImGui::Selectable(r.c_str())) s.open_path = r;
    if (ImGui::Button("Open") || enter) {
      if (!s.open_path.empty()) s.ws.open_dump(s.open_path);
      ImGui::CloseCurrentPopup();
    }
    ImGui::SameLine();
    if (ImGui::Button("Cancel")) ImGui::CloseCurrentPopup();
    ImGui::EndPopup();
  }
  if (s.figure_popup) {
    ImGui::OpenPopup("Save figure");
    s.figure_popup = false;
  }
  if (ImGui::BeginPopupModal("Save figure", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    FigureRequest& f = s.figure_draft;
    ImGui::Text("Save the %s plot as a PNG", f.view.c_str());
    ImGui::SetNextItemWidth(420 * sc);
    ImGui::InputText("file", &f.path);
    int fw = 0, fh = 0;
    if (s.window) s.window->framebuffer_size(&fw, &fh);
    ImGui::SetNextItemWidth(120 * sc);
    ImGui::InputInt("width", &f.w, 50);
    ImGui::SetNextItemWidth(120 * sc);
    ImGui::InputInt("height", &f.h, 50);
    f.w = std::clamp(f.w, 200, std::max(200, fw));  // drawn in the window: at most its size
    f.h = std::clamp(f.h, 150, std::max(150, fh));
    ImGui::TextDisabled("up to %d x %d (the window size)", fw, fh);
    if (ImGui::Button("Save")) {
      s.figure = f;
      ImGui::CloseCurrentPopup();
    }
    ImGui::SameLine();
    if (ImGui::Button("Cancel")) ImGui::CloseCurrentPopup();
    ImGui::EndPopup();
  }
  auto& errors = s.ws.errors();
  if (!errors.empty() && !s.script.active() && !ImGui::IsPopupOpen("Error")) ImGui::OpenPopup("Error");
  if (ImGui::BeginPopupModal("Error", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    if (!errors.empty()) ImGui::TextUnformatted(errors.front().c_str());
    if (ImGui::Button("OK")) {
      if (!errors.empty()) errors.erase(errors.begin());
      ImGui::CloseCurrentPopup();
    }
    ImGui::EndPopup();
  }
}

}  // namespace kvscope::gui
