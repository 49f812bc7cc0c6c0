// The Rate-distortion tab: bits/element vs a distortion metric of the runs, one curve per method,
// Pareto front circled; click a point to open its run; "Sweep all presets" on the open dump.
#include <imgui.h>

#include "app/gui/shell.h"

namespace kvscope::gui {

views::PlotData rd_data(const Shell& s) { return views::rd_plot(s.ws.runs().rows(), s.rd_metric); }

void rd_tab(Shell& s) {
  const char* metrics[] = {"K NMSE", "V NMSE", "1 - attention cosine", "greedy match (replay)", "next-token KL (replay)",
                           "99th pct KL (replay)"};
  static_assert(IM_ARRAYSIZE(metrics) == IM_ARRAYSIZE(views::kRdMetrics));
  int m = static_cast<int>(s.rd_metric);
  ImGui::SetNextItemWidth(220 * s.settings.ui_scale);
  if (ImGui::Combo("y axis", &m, metrics, IM_ARRAYSIZE(metrics))) s.rd_metric = static_cast<views::RdMetric>(m);
  ImGui::SameLine();
  ImGui::BeginDisabled(!s.ws.dump());
  if (ImGui::Button("Sweep all presets on this dump")) s.ws.start_sweep();
  ImGui::EndDisabled();
  ImGui::SameLine();
  if (ImGui::Button("Save figure")) s.ask_figure("rd");
  if (s.ws.runs().rows().empty()) {
    ImGui::TextDisabled("No runs yet: sweep the presets, open a run store, or press \"Save run\" in the policy editor.");
    return;
  }
  views::PlotData d = rd_data(s);
  views::PlotIntent in = views::draw_plot("rd", d, ImGui::GetContentRegionAvail());
  if (in.clicked.valid()) s.open_run(d.series[in.clicked.series].ids[in.clicked.index]);
}

}  // namespace kvscope::gui
