#pragma once
// Heatmap widget: draws a Heatmap value with a colour bar, shows exact values on hover, and
// reports what the user pointed at or clicked. Keeps no state of its own.
#include <vector>

#include <imgui.h>

#include "views/heatmap_model.h"

namespace kvscope::views {

struct HeatmapStyle {
  Colormap cmap = Colormap::Viridis;
  ValueScale scale;
  float gap = 1.0f;
  CellRef selected;               // outlined
  std::vector<CellRef> marked;    // e.g. heads kept in fp16: drawn with a white diagonal
  bool show_values = false;       // print the value in each cell when it fits
  std::vector<bool> stale_rows;   // rows still showing an older result (or none): dimmed and striped
};

struct HeatmapIntent {
  CellRef hovered, clicked, right_clicked;
  GridLayout layout;  // where the cells were drawn (screen pixels), for scripts and screenshots
};

// `size` is the whole widget incl. axis labels and title.
HeatmapIntent draw_heatmap(const char* id, const Heatmap& h, const HeatmapStyle& style, ImVec2 size);

// Vertical colour bar with ticks (log-aware). Returns the bar rectangle (screen pixels).
Rect draw_colorbar(const char* id, const ValueScale& scale, Colormap cmap, ImVec2 size);

// A one-row strip (e.g. per-token error binned by bin_max from `total` items) drawn as coloured
// columns; hover shows the item range and value. Returns the hovered bin or -1.
int draw_strip(const char* id, const std::vector<double>& values, int total, const ValueScale& scale, Colormap cmap,
               ImVec2 size, const char* index_name);

inline ImU32 to_imu32(Rgb c, int alpha = 255) { return IM_COL32(c.r, c.g, c.b, alpha); }

}  // namespace kvscope::views
