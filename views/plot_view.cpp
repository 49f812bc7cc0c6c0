#include "views/plot_view.h"

#include <algorithm>
#include <cmath>

#include "views/heatmap_view.h"

namespace kvscope::views {

namespace {

bool drawable(const PlotData& d, double x, double y) {
  return std::isfinite(x) && std::isfinite(y) && (d.x_scale != ScaleKind::Log || x > 0) &&
         (d.y_scale != ScaleKind::Log || y > 0);
}

}  // namespace

PlotIntent draw_plot(const char* id, const PlotData& d, ImVec2 size) {
  PlotIntent intent;
  ImGui::PushID(id);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImVec2 o = ImGui::GetCursorScreenPos();
  float line = ImGui::GetTextLineHeight();
  ImGui::InvisibleButton("plot", size);
  bool hovered_widget = ImGui::IsItemHovered();
  bool clicked_widget = ImGui::IsItemClicked(ImGuiMouseButton_Left);

  ImU32 text = ImGui::GetColorU32(ImGuiCol_Text);
  ImU32 dim = ImGui::GetColorU32(ImGuiCol_TextDisabled);
  ImU32 grid = ImGui::GetColorU32(ImGuiCol_Border);
  // Minor lines at a third of the major lines' opacity (masking the alpha bits, as before, made
  // them vanish in the dark theme and stay heavy in the light one).
  ImU32 grid_minor = ImGui::GetColorU32(ImGuiCol_Border, 0.35f);
  dl->AddRectFilled(o, ImVec2(o.x + size.x, o.y + size.y), ImGui::GetColorU32(ImGuiCol_FrameBg));
  dl->AddText(ImVec2(o.x + 8, o.y + 4), text, d.title.c_str());
  float left = ImGui::CalcTextSize("0.0000").x + line + 12;
  // Legend entries: a 16 px swatch, 4 px gap, the name; outside the plot when asked (static figures,
  // where nothing can be moved out of the way).
  float legend_w = 0;
  for (const auto& ser : d.series) legend_w = std::max(legend_w, ImGui::CalcTextSize(ser.name.c_str()).x);
  if (d.show_pareto) legend_w = std::max(legend_w, ImGui::CalcTextSize("Pareto front").x);
  legend_w += 28;
  float right = d.legend_outside ? legend_w + 24 : 16;
  Rect area{o.x + left, o.y + line * 2 + 8, o.x + size.x - right, o.y + size.y - line * 2 - 12};
  intent.area = area;
  if (area.width() < 20 || area.height() < 20) {
    ImGui::PopID();
    return intent;
  }
  PlotFrame f = fit_frame(d, area);
  intent.frame = f;

  // Grid and tick labels.
  float last_x_label_end = -1e9f;
  for (const Tick& t : axis_ticks(f.x)) {
    float x = f.x.to_pixel(t.value);
    if (x < area.x0 - 0.5f || x > area.x1 + 0.5f) continue;
    dl->AddLine(ImVec2(x, area.y0), ImVec2(x, area.y1), t.major ? grid : grid_minor);
    if (!t.label.empty()) {
      float w = ImGui::CalcTextSize(t.label.c_str()).x;
      if (x - w / 2 > last_x_label_end + 4) {
        dl->AddText(ImVec2(x - w / 2, area.y1 + 3), text, t.label.c_str());
        last_x_label_end = x + w / 2;
      }
    }
  }
  float last_y_label = 1e9f;
  for (const Tick& t : axis_ticks(f.y)) {
    float y = f.y.to_pixel(t.value);
    if (y < area.y0 - 0.5f || y > area.y1 + 0.5f) continue;
    dl->AddLine(ImVec2(area.x0, y), ImVec2(area.x1, y), t.major ? grid : grid_minor);
    if (!t.label.empty() && last_y_label - y >= line) {
      float w = ImGui::CalcTextSize(t.label.c_str()).x;
      dl->AddText(ImVec2(area.x0 - w - 4, y - line / 2), text, t.label.c_str());
      last_y_label = y;
    }
  }
  dl->AddRect(ImVec2(area.x0, area.y0), ImVec2(area.x1, area.y1), dim);
  float xw = ImGui::CalcTextSize(d.x_label.c_str()).x;
  dl->AddText(ImVec2((area.x0 + area.x1 - xw) / 2, area.y1 + line + 6), dim, d.x_label.c_str());
  dl->AddText(ImVec2(area.x0, area.y0 - line - 2), dim, d.y_label.c_str());

  dl->PushClipRect(ImVec2(area.x0, area.y0), ImVec2(area.x1, area.y1), true);
  if (d.show_pareto) {
    auto front = pareto_front(all_points(d), d.lower_y_is_better);
    std::vector<ImVec2> pts;
    for (const auto& p : front)
      if (drawable(d, p.x, p.y)) pts.emplace_back(f.x.to_pixel(p.x), f.y.to_pixel(p.y));
    if (pts.size() >= 2) dl->AddPolyline(pts.data(), static_cast<int>(pts.size()), (text & ~IM_COL32_A_MASK) | (70u << IM_COL32_A_SHIFT), 0, 9.0f);
    for (const ImVec2& p : pts) dl->AddCircle(p, 8.0f, IM_COL32(255, 80, 80, 255), 16, 2.0f);
  }
  for (int s = 0; s < static_cast<int>(d.series.size()); ++s) {
    const Series& ser = d.series[s];
    ImU32 col = to_imu32(series_color(s));
    std::vector<ImVec2> pts;
    for (size_t i = 0; i < std::min(ser.x.size(), ser.y.size()); ++i)
      if (drawable(d, ser.x[i], ser.y[i])) pts.emplace_back(f.x.to_pixel(ser.x[i]), f.y.to_pixel(ser.y[i]));
    if (pts.size() >= 2) dl->AddPolyline(pts.data(), static_cast<int>(pts.size()), col, 0, 2.0f);
    for (const ImVec2& p : pts) dl->AddCircleFilled(p, 4.0f, col);
  }
  // Point annotations (static figures): beside the point, the first of four places that overlaps
  // neither the legend (drawn below, top right) nor an earlier annotation; dropped when none is free.
  std::vector<Rect> taken;
  int entries = static_cast<int>(d.series.size()) + (d.show_pareto ? 1 : 0);
  if (entries > 0 && !d.legend_outside)
    taken.push_back({area.x1 - legend_w - 4, area.y0 + 5, area.x1 - 4, area.y0 + 7 + entries * (line + 2)});
  for (int s = 0; s < static_cast<int>(d.series.size()); ++s) {
    const Series& ser = d.series[s];
    for (size_t i = 0; i < std::min({ser.x.size(), ser.y.size(), ser.annotations.size()}); ++i) {
      if (ser.annotations[i].empty() || !drawable(d, ser.x[i], ser.y[i])) continue;
      ImVec2 p(f.x.to_pixel(ser.x[i]), f.y.to_pixel(ser.y[i]));
      ImVec2 ts = ImGui::CalcTextSize(ser.annotations[i].c_str());
      const ImVec2 offsets[] = {{6, -ts.y - 2}, {6, 2}, {-ts.x - 6, -ts.y - 2}, {-ts.x - 6, 2}};
      for (const ImVec2& o : offsets) {
        Rect r{p.x + o.x, p.y + o.y, p.x + o.x + ts.x, p.y + o.y + ts.y};
        bool inside = r.x0 >= area.x0 && r.x1 <= area.x1 && r.y0 >= area.y0 && r.y1 <= area.y1;
        bool clear = std::none_of(taken.begin(), taken.end(), [&](const Rect& t) {
          return r.x0 < t.x1 && t.x0 < r.x1 && r.y0 < t.y1 && t.y0 < r.y1;
        });
        if (!inside || !clear) continue;
        dl->AddText(ImVec2(r.x0, r.y0), to_imu32(series_color(s)), ser.annotations[i].c_str());
        taken.push_back(r);
        break;
      }
    }
  }
  dl->PopClipRect();

  // Legend, top right inside the plot (or right of it).
  float ly = area.y0 + 6;
  for (int s = 0; s < static_cast<int>(d.series.size()); ++s) {
    const char* name = d.series[s].name.c_str();
    float w = ImGui::CalcTextSize(name).x;
    float lx = d.legend_outside ? area.x1 + 16 : area.x1 - w - 28;
    if (!d.legend_outside)
      dl->AddRectFilled(ImVec2(lx - 4, ly - 1), ImVec2(area.x1 - 4, ly + line + 1), IM_COL32(0, 0, 0, 110));
    dl->AddLine(ImVec2(lx, ly + line / 2), ImVec2(lx + 16, ly + line / 2), to_imu32(series_color(s)), 3.0f);
    dl->AddText(ImVec2(lx + 20, ly), d.legend_outside ? text : IM_COL32(255, 255, 255, 255), name);
    ly += line + 2;
  }
  if (d.show_pareto) {
    const char* name = "Pareto front";
    float w = ImGui::CalcTextSize(name).x;
    float lx = d.legend_outside ? area.x1 + 16 : area.x1 - w - 28;
    if (!d.legend_outside)
      dl->AddRectFilled(ImVec2(lx - 4, ly - 1), ImVec2(area.x1 - 4, ly + line + 1), IM_COL32(0, 0, 0, 110));
    dl->AddCircle(ImVec2(lx + 8, ly + line / 2), 5.0f, IM_COL32(255, 80, 80, 255), 12, 2.0f);
    dl->AddText(ImVec2(lx + 20, ly), d.legend_outside ? text : IM_COL32(255, 255, 255, 255), name);
  }

  if (hovered_widget) {
    ImVec2 m = ImGui::GetIO().MousePos;
    intent.hovered = hit_test(d, f, m.x, m.y, 10.0f);
    if (intent.hovered.valid()) {
      const Series& ser = d.series[intent.hovered.series];
      int i = intent.hovered.index;
      dl->AddCircle(ImVec2(f.x.to_pixel(ser.x[i]), f.y.to_pixel(ser.y[i])), 7.0f, IM_COL32(255, 255, 255, 255), 16, 2.0f);
      ImGui::BeginTooltip();
      ImGui::TextUnformatted(i < static_cast<int>(ser.labels.size()) ? ser.labels[i].c_str() : ser.name.c_str());
      ImGui::Text("%s = %.5g", d.x_label.c_str(), ser.x[i]);
      ImGui::Text("%s = %.5g", d.y_label.c_str(), ser.y[i]);
      if (!ser.ids.empty()) ImGui::TextDisabled("click to open this run");
      ImGui::EndTooltip();
      if (clicked_widget) intent.clicked = intent.hovered;
    }
  }
  ImGui::PopID();
  return intent;
}

}  // namespace kvscope::views
