#include "views/heatmap_view.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "views/plot_model.h"

namespace kvscope::views {

namespace {

std::string label(const std::vector<std::string>& labels, int i) {
  return i < static_cast<int>(labels.size()) ? labels[i] : std::to_string(i);
}

}  // namespace

HeatmapIntent draw_heatmap(const char* id, const Heatmap& h, const HeatmapStyle& style, ImVec2 size) {
  HeatmapIntent intent;
  ImGui::PushID(id);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImVec2 origin = ImGui::GetCursorScreenPos();
  float line = ImGui::GetTextLineHeight();
  float label_w = ImGui::CalcTextSize("000").x + 6;
  Rect area{origin.x + label_w, origin.y + 3 * line + 6, origin.x + size.x, origin.y + size.y};
  ImU32 text_col = ImGui::GetColorU32(ImGuiCol_Text);
  dl->AddText(origin, text_col, h.title.c_str());
  ImGui::InvisibleButton("grid", size, ImGuiButtonFlags_MouseButtonLeft | ImGuiButtonFlags_MouseButtonRight);
  if (h.rows <= 0 || h.cols <= 0 || area.width() <= 0 || area.height() <= 0) {
    dl->AddText(ImVec2(area.x0, area.y0), text_col, "no data");
    ImGui::PopID();
    return intent;
  }
  GridLayout g{area, h.rows, h.cols, style.gap};
  intent.layout = g;

  // Column labels above the grid, row labels left of it (thinned when cells are short).
  for (int c = 0; c < h.cols; ++c) {
    Rect r = g.cell_rect(0, c);
    std::string s = label(h.col_labels, c);
    float w = ImGui::CalcTextSize(s.c_str()).x;
    dl->AddText(ImVec2((r.x0 + r.x1 - w) / 2, area.y0 - line - 2), text_col, s.c_str());
  }
  int row_step = std::max(1, static_cast<int>(std::ceil(line / (area.height() / h.rows))));
  for (int r = 0; r < h.rows; r += row_step) {
    Rect rc = g.cell_rect(r, 0);
    std::string s = label(h.row_labels, r);
    float w = ImGui::CalcTextSize(s.c_str()).x;
    dl->AddText(ImVec2(area.x0 - w - 4, (rc.y0 + rc.y1 - line) / 2), text_col, s.c_str());
  }
  std::string axes = "rows: " + h.row_axis + "   cols: " + h.col_axis;
  dl->AddText(ImVec2(origin.x, origin.y + line + 1), ImGui::GetColorU32(ImGuiCol_TextDisabled), axes.c_str());

  std::vector<Rgb> colors = heatmap_colors(h, style.scale, style.cmap);
  for (int r = 0; r < h.rows; ++r)
    for (int c = 0; c < h.cols; ++c) {
      Rect rc = g.cell_rect(r, c);
      Rgb col = colors[static_cast<size_t>(r) * h.cols + c];
      dl->AddRectFilled(ImVec2(rc.x0, rc.y0), ImVec2(rc.x1, rc.y1), to_imu32(col));
      if (style.show_values && rc.height() > line + 2) {
        std::string s = format_value(h.at(r, c));
        ImVec2 ts = ImGui::CalcTextSize(s.c_str());
        if (ts.x < rc.width() - 4) {
          // Dark text on bright cells, light on dark ones.
          bool bright = 0.299 * col.r + 0.587 * col.g + 0.114 * col.b > 140;
          dl->AddText(ImVec2((rc.x0 + rc.x1 - ts.x) / 2, (rc.y0 + rc.y1 - ts.y) / 2),
                      bright ? IM_COL32(0, 0, 0, 255) : IM_COL32(255, 255, 255, 255), s.c_str());
        }
      }
    }
  // Stale rows: a dark veil with diagonal stripes over the whole row, so a refresh in progress
  // reads as "not yet" rather than as values.
  for (int r = 0; r < h.rows && r < static_cast<int>(style.stale_rows.size()); ++r) {
    if (!style.stale_rows[r]) continue;
    Rect a = g.cell_rect(r, 0), b = g.cell_rect(r, h.cols - 1);
    dl->AddRectFilled(ImVec2(a.x0, a.y0), ImVec2(b.x1, b.y1), IM_COL32(0, 0, 0, 140));
    dl->PushClipRect(ImVec2(a.x0, a.y0), ImVec2(b.x1, b.y1), true);
    const float step = 8.0f, hgt = b.y1 - a.y0;
    for (float x = a.x0 - hgt; x < b.x1; x += step)
      dl->AddLine(ImVec2(x, b.y1), ImVec2(x + hgt, a.y0), IM_COL32(255, 255, 255, 70), 1.0f);
    dl->PopClipRect();
  }
  for (const CellRef& m : style.marked) {
    if (m.row < 0 || m.row >= h.rows || m.col < 0 || m.col >= h.cols) continue;
    Rect rc = g.cell_rect(m.row, m.col);
    dl->AddLine(ImVec2(rc.x0, rc.y1), ImVec2(rc.x1, rc.y0), IM_COL32(255, 255, 255, 230), 2.0f);
    dl->AddText(ImVec2(rc.x0 + 2, rc.y0), IM_COL32(255, 255, 255, 230), "fp16");
  }
  if (style.selected.valid() && style.selected.row < h.rows && style.selected.col < h.cols) {
    Rect rc = g.cell_rect(style.selected.row, style.selected.col);
    dl->AddRect(ImVec2(rc.x0 - 1, rc.y0 - 1), ImVec2(rc.x1 + 1, rc.y1 + 1), IM_COL32(255, 64, 64, 255), 0, 0, 3.0f);
  }

  if (ImGui::IsItemHovered()) {
    ImVec2 m = ImGui::GetIO().MousePos;
    intent.hovered = g.hit_test(m.x, m.y);
    if (intent.hovered.valid()) {
      Rect rc = g.cell_rect(intent.hovered.row, intent.hovered.col);
      dl->AddRect(ImVec2(rc.x0, rc.y0), ImVec2(rc.x1, rc.y1), IM_COL32(255, 255, 255, 255), 0, 0, 2.0f);
      ImGui::BeginTooltip();
      ImGui::Text("%s %s, %s %s", h.row_axis.c_str(), label(h.row_labels, intent.hovered.row).c_str(),
                  h.col_axis.c_str(), label(h.col_labels, intent.hovered.col).c_str());
      double v = h.at(intent.hovered.row, intent.hovered.col);
      ImGui::Text("%s = %.6g", h.title.c_str(), v);
      ImGui::TextDisabled("click: drill into this head   right-click: toggle fp16");
      ImGui::EndTooltip();
      if (ImGui::IsItemClicked(ImGuiMouseButton_Left)) intent.clicked = intent.hovered;
      if (ImGui::IsItemClicked(ImGuiMouseButton_Right)) intent.right_clicked = intent.hovered;
    }
  }
  ImGui::PopID();
  return intent;
}

Rect draw_colorbar(const char* id, const ValueScale& scale, Colormap cmap, ImVec2 size) {
  ImGui::PushID(id);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImVec2 o = ImGui::GetCursorScreenPos();
  float line = ImGui::GetTextLineHeight();
  float bar_w = std::min(18.0f, size.x * 0.3f);
  Rect bar{o.x, o.y + line, o.x + bar_w, o.y + size.y - line};
  ImGui::Dummy(size);
  const int steps = 64;
  for (int i = 0; i < steps; ++i) {
    // Top of the bar is the high end.
    float y0 = bar.y1 - (i + 1) * bar.height() / steps, y1 = bar.y1 - i * bar.height() / steps;
    Rgb c = colormap_sample(cmap, (i + 0.5) / steps);
    dl->AddRectFilled(ImVec2(bar.x0, y0), ImVec2(bar.x1, y1 + 0.5f), to_imu32(c));
  }
  ImU32 text_col = ImGui::GetColorU32(ImGuiCol_Text);
  dl->AddRect(ImVec2(bar.x0, bar.y0), ImVec2(bar.x1, bar.y1), ImGui::GetColorU32(ImGuiCol_Border));
  PlotAxis axis{scale.kind, scale.lo, scale.hi, bar.y1, bar.y0};
  float last_label_y = 1e9f;
  for (const Tick& t : axis_ticks(axis)) {
    float y = axis.to_pixel(t.value);
    dl->AddLine(ImVec2(bar.x1, y), ImVec2(bar.x1 + (t.major ? 5.0f : 3.0f), y), text_col);
    if (!t.label.empty() && last_label_y - y >= line) {
      dl->AddText(ImVec2(bar.x1 + 7, y - line / 2), text_col, t.label.c_str());
      last_label_y = y;
    }
  }
  ImGui::PopID();
  return bar;
}

int draw_strip(const char* id, const std::vector<double>& values, int total, const ValueScale& scale, Colormap cmap,
               ImVec2 size, const char* index_name) {
  ImGui::PushID(id);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImVec2 o = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton("strip", size);
  int hovered = -1;
  int n = static_cast<int>(values.size());
  if (n > 0) {
    float w = size.x / n;
    for (int i = 0; i < n; ++i) {
      double v = values[i];
      Rgb c = std::isfinite(v) ? colormap_sample(cmap, scale.normalize(v)) : Rgb{96, 96, 96};
      dl->AddRectFilled(ImVec2(o.x + i * w, o.y), ImVec2(o.x + (i + 1) * w + 0.5f, o.y + size.y), to_imu32(c));
    }
    if (ImGui::IsItemHovered()) {
      float mx = ImGui::GetIO().MousePos.x - o.x;
      hovered = std::clamp(static_cast<int>(mx / w), 0, n - 1);
      auto [first, last] = bin_range(hovered, n, total);
      if (last - first <= 1) ImGui::SetTooltip("%s %d: %.4g", index_name, first, values[hovered]);
      else ImGui::SetTooltip("%s %d..%d: max %.4g", index_name, first, last - 1, values[hovered]);
    }
  }
  ImGui::PopID();
  return hovered;
}

}  // namespace kvscope::views
