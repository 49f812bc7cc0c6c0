// The Heatmap tab: layer x KV head maps of K and V on one colour scale, hover/click/right-click,
// and the drill-down panel of the selected head.
#include <imgui.h>

#include <algorithm>

#include "app/gui/policy_tuning.h"
#include "app/gui/shell.h"
#include "views/head_detail_view.h"

namespace kvscope::gui {

using views::HeadMetric;

void heatmap_pair(Shell& s, ImVec2 size, bool interactive) {
  Workspace& ws = s.ws;
  const auto& report = ws.report();
  std::vector<views::Heatmap> maps;
  if (report) {
    if (views::metric_per_kind(s.metric)) {
      maps.push_back(views::head_heatmap(*report, s.metric, 'k'));
      maps.push_back(views::head_heatmap(*report, s.metric, 'v'));
    } else {
      maps.push_back(views::head_heatmap(*report, s.metric, 'k'));
    }
  }
  if (maps.empty()) {
    ImGui::TextDisabled(ws.dump() ? "Quantizing... the heatmap appears when the first job finishes."
                                  : "Loading the dump...");
    return;
  }
  std::vector<double> all;
  for (const auto& m : maps) all.insert(all.end(), m.values.begin(), m.values.end());
  bool log = s.log_scale && s.metric != HeadMetric::BitsPerElement;
  views::ValueScale scale = views::fit_scale(all, log ? views::ScaleKind::Log : views::ScaleKind::Linear);
  float bar_w = 90 * s.settings.ui_scale;
  float map_w = std::min(260.0f * s.settings.ui_scale, (size.x - bar_w) / maps.size() - 8);
  for (size_t i = 0; i < maps.size(); ++i) {
    char kind = i == 0 ? 'k' : 'v';
    views::HeatmapStyle style;
    style.cmap = s.cmap;
    style.scale = scale;
    style.show_values = s.show_values;
    if (ws.has_selection() && (ws.selected_kind() == kind || maps.size() == 1))
      style.selected = views::CellRef{ws.selected_layer(), ws.selected_head()};
    for (auto [l, h] : fp16_heads(ws.policy(), kind)) style.marked.push_back({l, h});
    style.stale_rows = ws.stale_rows(views::metric_per_kind(s.metric) ? kind : 'a');
    ImGui::BeginGroup();
    views::HeatmapIntent in = views::draw_heatmap(kind == 'k' ? "heat_k" : "heat_v", maps[i], style, ImVec2(map_w, size.y));
    ImGui::EndGroup();
    ImGui::SameLine();
    if (!interactive) continue;
    (kind == 'k' ? s.layout_k : s.layout_v) = in.layout;
    if (in.clicked.valid()) ws.select_head(kind, in.clicked.row, in.clicked.col);
    if (in.right_clicked.valid()) ws.toggle_head_fp16(in.right_clicked.row, in.right_clicked.col, kind);
  }
  views::draw_colorbar("colorbar", scale, s.cmap, ImVec2(bar_w, size.y));
}

void heatmap_tab(Shell& s) {
  Workspace& ws = s.ws;
  float sc = s.settings.ui_scale;
  ImGui::SetNextItemWidth(230 * sc);
  if (ImGui::BeginCombo("metric", views::head_metric_name(s.metric))) {
    for (HeadMetric hm : views::kHeadMetrics)
      if (ImGui::Selectable(views::head_metric_name(hm), hm == s.metric)) s.metric = hm;
    ImGui::EndCombo();
  }
  ImGui::SameLine();
  ImGui::Checkbox("log scale", &s.log_scale);
  ImGui::SameLine();
  int c = static_cast<int>(s.cmap);
  ImGui::SetNextItemWidth(110 * sc);
  const char* cmaps[] = {"viridis", "magma"};
  if (ImGui::Combo("colormap", &c, cmaps, 2)) s.cmap = static_cast<views::Colormap>(c);
  ImGui::SameLine();
  ImGui::Checkbox("values", &s.show_values);
  ImGui::SameLine();
  if (ImGui::Button("Save figure")) s.ask_figure("heatmap");

  ImVec2 avail = ImGui::GetContentRegionAvail();
  float detail_w = std::max(300.0f * sc, avail.x * 0.45f);
  ImGui::BeginChild("maps", ImVec2(avail.x - detail_w, avail.y), false);
  heatmap_pair(s, ImGui::GetContentRegionAvail(), true);
  ImGui::EndChild();
  ImGui::SameLine();
  ImGui::BeginChild("detail", ImVec2(0, avail.y), true);
  if (const auto& profile = ws.profile()) {
    bool kept = head_kept_fp16(ws.policy(), profile->layer, profile->head, profile->kind);
    views::HeadDetailIntent in = views::draw_head_detail(*profile, kept, s.cmap, ImGui::GetContentRegionAvail().x);
    if (in.close) ws.clear_selection();
    else if (in.toggle_fp16) ws.toggle_head_fp16(profile->layer, profile->head, profile->kind);
  } else {
    ImGui::TextWrapped("Click a heatmap cell to drill into that head: per-channel max |K| before and after RoPE, "
                       "the per-token error strip and the head's outlier channels.");
  }
  if (const auto& report = ws.report()) {
    ImGui::Separator();
    ImGui::Text("%s: %.3f bits/element, %.0f B/token (fp16 %.0f)", report->policy_name.c_str(), report->bits_per_element,
                report->bytes_per_token, report->fp16_bytes_per_token);
    // attn_queries == 0: the attention phase has not delivered yet (tensor metrics come first).
    if (report->attn_queries > 0) {
      ImGui::Text("K NMSE %.4g   V NMSE %.4g   attention cos %.5f (min %.4f)", report->k_nmse, report->v_nmse,
                  report->attn_cos_mean, report->attn_cos_min);
      ImGui::TextDisabled("attention on %d of %d query positions per head", report->attn_queries, report->shape.tokens);
    }
    else
      ImGui::Text("K NMSE %.4g   V NMSE %.4g   attention cos: computing...", report->k_nmse, report->v_nmse);
  }
  ImGui::EndChild();
}

}  // namespace kvscope::gui
