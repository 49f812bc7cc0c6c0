#include "views/heatmap_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace kvscope::views {

Rect GridLayout::cell_rect(int row, int col) const {
  float cw = area.width() / cols, ch = area.height() / rows;
  float half = gap * 0.5f;
  return {area.x0 + col * cw + half, area.y0 + row * ch + half, area.x0 + (col + 1) * cw - half,
          area.y0 + (row + 1) * ch - half};
}

CellRef GridLayout::hit_test(float x, float y) const {
  if (rows <= 0 || cols <= 0 || !area.contains(x, y)) return {};
  int col = static_cast<int>((x - area.x0) / (area.width() / cols));
  int row = static_cast<int>((y - area.y0) / (area.height() / rows));
  if (col >= cols) col = cols - 1;  // float rounding at the right/bottom edge
  if (row >= rows) row = rows - 1;
  if (!cell_rect(row, col).contains(x, y)) return {};  // in the gap between cells
  return {row, col};
}

std::vector<Rgb> heatmap_colors(const Heatmap& h, const ValueScale& scale, Colormap cmap, Rgb missing) {
  std::vector<Rgb> out;
  out.reserve(h.values.size());
  for (double v : h.values) out.push_back(std::isfinite(v) ? colormap_sample(cmap, scale.normalize(v)) : missing);
  return out;
}

CellRef hottest_cell(const Heatmap& h) {
  CellRef best;
  double best_v = 0;
  for (int r = 0; r < h.rows; ++r)
    for (int c = 0; c < h.cols; ++c) {
      double v = h.at(r, c);
      if (std::isfinite(v) && (!best.valid() || v > best_v)) {
        best = {r, c};
        best_v = v;
      }
    }
  return best;
}

std::pair<int, int> bin_range(int bin, int bins, int n) {
  return {static_cast<int>(int64_t(bin) * n / bins), static_cast<int>(int64_t(bin + 1) * n / bins)};
}

std::vector<double> bin_max(const std::vector<float>& values, int bins) {
  int n = static_cast<int>(values.size());
  if (bins <= 0 || n == 0) return {};
  bins = std::min(bins, n);
  std::vector<double> out(bins);
  for (int b = 0; b < bins; ++b) {
    auto [first, last] = bin_range(b, bins, n);
    double m = values[first];
    for (int i = first + 1; i < last; ++i) m = std::max<double>(m, values[i]);
    out[b] = m;
  }
  return out;
}

}  // namespace kvscope::views
