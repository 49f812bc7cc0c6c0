#pragma once
// What the heatmap view draws: a plain grid of numbers, where each cell lands on screen, which
// colour it gets, and which cell a mouse position falls in. No ImGui here.
#include <string>
#include <utility>
#include <vector>

#include "views/colormap.h"

namespace kvscope::views {

// rows x cols values, row-major; NaN marks a cell without data (drawn hatched grey).
struct Heatmap {
  std::string title;        // e.g. "K  NMSE"
  std::string row_axis, col_axis;  // e.g. "layer", "KV head"
  int rows = 0, cols = 0;
  std::vector<double> values;
  std::vector<std::string> row_labels, col_labels;  // optional; indices are shown when empty
  double at(int r, int c) const { return values[static_cast<size_t>(r) * cols + c]; }
};

struct Rect {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  float width() const { return x1 - x0; }
  float height() const { return y1 - y0; }
  bool contains(float x, float y) const { return x >= x0 && x < x1 && y >= y0 && y < y1; }
};

struct CellRef {
  int row = -1, col = -1;
  bool valid() const { return row >= 0 && col >= 0; }
  bool operator==(const CellRef&) const = default;
};

// Cells tile `area` exactly (row 0 at the top); `gap` pixels separate neighbours and belong to
// no cell, so the mouse over a gap hits nothing.
struct GridLayout {
  Rect area;
  int rows = 0, cols = 0;
  float gap = 0;
  Rect cell_rect(int row, int col) const;
  CellRef hit_test(float x, float y) const;
};

// Colour of every cell (row-major) under `scale` and `cmap`; NaN cells get `missing`.
std::vector<Rgb> heatmap_colors(const Heatmap& h, const ValueScale& scale, Colormap cmap,
                                Rgb missing = {96, 96, 96});

// The cell with the largest finite value (what the outlier hunt is about), or invalid.
CellRef hottest_cell(const Heatmap& h);

// Shrinks a long series (e.g. 4096 per-token errors) to `bins` columns keeping each bin's
// maximum, so a single bad token still shows. Bin i covers items bin_range(i, bins, n).
std::vector<double> bin_max(const std::vector<float>& values, int bins);
std::pair<int, int> bin_range(int bin, int bins, int n);  // [first, last)

}  // namespace kvscope::views
