// Sidebar: the open dump and the models found (capture a dump, replay with the editor's policy).
#include <imgui.h>
#include <imgui_stdlib.h>

#include "app/gui/shell.h"

namespace kvscope::gui {

void sources_panel(Shell& s) {
  Workspace& ws = s.ws;
  ImGui::TextDisabled("Dump");
  ImGui::TextWrapped("%s", ws.dump() ? ws.dump_name().c_str() : "(loading...)");
  if (ws.dump()) {
    const DumpShape& d = ws.dump()->shape();
    ImGui::TextDisabled("%d layers x %d KV heads (%d Q) x %d tokens x %d", d.layers, d.kv_heads, d.q_heads, d.tokens, d.head_dim);
  }
  if (ImGui::SmallButton("Open dump...")) s.open_dump_popup = true;
  ImGui::SameLine();
  if (ImGui::SmallButton("Demo")) ws.open_demo(s.opts.demo_tokens);
  if (s.models.empty() || !ImGui::TreeNode("models", "Models found (%d)", static_cast<int>(s.models.size()))) return;
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##captext", "capture text file (empty: built-in passage)", &s.capture_text);
  ImGui::SetNextItemWidth(120 * s.settings.ui_scale);
  ImGui::SliderInt("tokens##cap", &s.capture_tokens, 16, 4096);
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##replayspec", "replay workload: text:PATH | jsonl:PATH | passkey:len=L,depth=D,n=N", &s.replay_spec);
  for (const auto& l : ws.replay_lines()) ImGui::TextWrapped("%s", l.c_str());
  for (size_t i = 0; i < s.models.size(); ++i) {
    const ModelEntry& m = s.models[i];
    ImGui::PushID(static_cast<int>(i));
    if (m.error.empty()) {
      if (ImGui::SmallButton("Capture")) ws.capture(m, s.capture_text, s.capture_tokens);
      ImGui::SameLine();
      if (ImGui::SmallButton("Replay")) ws.replay(m, s.replay_spec);
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

}  // namespace kvscope::gui
