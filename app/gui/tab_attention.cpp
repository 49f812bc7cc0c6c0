// The Attention cosine tab: per-layer 1 - attention output cosine (or NMSE) of the live result and
// of the runs picked in "overlay runs".
#include <imgui.h>

#include <algorithm>

#include "app/gui/shell.h"

namespace kvscope::gui {

views::PlotData attention_data(Shell& s) {
  Workspace& ws = s.ws;
  const auto& attn_runs = ws.attention_runs();
  std::vector<std::shared_ptr<const QuantizeReport>> keep;  // alive until the plot data is built
  std::vector<views::NamedReport> named;
  const Policy& policy = ws.policy();
  if (const auto& r = ws.report()) {
    std::string name = "live: " + (policy.name.empty() ? std::string("(custom)") : policy.name);
    if (r->attn_queries > 0) name += " (" + std::to_string(r->attn_queries) + " query positions)";  // the figure says it too
    named.push_back({name, r.get()});
  }
  for (const auto& row : ws.runs().rows())
    if (std::find(attn_runs.begin(), attn_runs.end(), row.id) != attn_runs.end())
      if (auto rep = ws.runs().report(row.id)) {
        keep.push_back(rep);
        named.push_back({"run " + std::to_string(row.id) + ": " + row.policy, rep.get()});
      }
  return views::attention_by_layer(named, s.attn_nmse);
}

void attention_tab(Shell& s) {
  Workspace& ws = s.ws;
  auto& attn_runs = ws.attention_runs();
  ImGui::Checkbox("NMSE instead of cosine", &s.attn_nmse);
  ImGui::SameLine();
  if (ImGui::Button("Save figure")) s.ask_figure("attention");
  if (!ws.runs().rows().empty()) {
    ImGui::SameLine();
    ImGui::SetNextItemWidth(260 * s.settings.ui_scale);
    if (ImGui::BeginCombo("overlay runs", (std::to_string(attn_runs.size()) + " selected").c_str())) {
      for (const auto& row : ws.runs().rows()) {
        bool on = std::find(attn_runs.begin(), attn_runs.end(), row.id) != attn_runs.end();
        std::string label = std::to_string(row.id) + "  " + row.policy + "  " + row.tag;
        if (ImGui::Checkbox(label.c_str(), &on)) {
          if (on) attn_runs.push_back(row.id);
          else attn_runs.erase(std::remove(attn_runs.begin(), attn_runs.end(), row.id), attn_runs.end());
        }
      }
      ImGui::EndCombo();
    }
  }
  if (!ws.report() && attn_runs.empty()) {
    ImGui::TextDisabled("Waiting for a quantization result.");
    return;
  }
  if (const auto& r = ws.report(); r && r->attn_queries > 0) {
    // Live tuning measures attention at fewer query positions than the CLI: how many it used.
    ImGui::TextDisabled("live: %d of %d query positions per head%s", r->attn_queries, r->shape.tokens,
                        ws.stale_rows('a') == std::vector<bool>(r->shape.layers, false) ? "" : "  (updating...)");
  }
  views::draw_plot("attention", attention_data(s), ImGui::GetContentRegionAvail());
}

}  // namespace kvscope::gui
