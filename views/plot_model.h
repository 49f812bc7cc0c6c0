#pragma once
// What the line / rate-distortion / per-layer plots draw: axes (linear or log10) mapping data to
// pixels, tick positions and labels, the Pareto front, and hit-testing the mouse to a point.
// No ImGui here.
#include <cstdint>
#include <string>
#include <vector>

#include "views/colormap.h"
#include "views/heatmap_model.h"

namespace kvscope::views {

// One axis: data range [lo, hi] onto the pixel range [p0, p1] (p1 < p0 for a y axis growing up).
struct PlotAxis {
  ScaleKind kind = ScaleKind::Linear;
  double lo = 0, hi = 1;
  float p0 = 0, p1 = 1;
  bool integer = false;  // ticks only at whole numbers (e.g. layer indices)
  float to_pixel(double v) const;
  double from_pixel(float p) const;
};

struct Tick {
  double value = 0;
  std::string label;  // empty for minor ticks
  bool major = true;
};

// "Nice" 1-2-5 steps, about `target` ticks inside [lo, hi].
std::vector<Tick> linear_ticks(double lo, double hi, int target = 6);
// Majors at powers of ten inside [lo, hi] (lo > 0), minors at 2..9 x 10^k; when the range spans
// less than one decade the 2..9 multiples get labels too (with two majors, the 2x and 5x ones),
// and a range holding fewer than two of those gets 1-2-5 linear ticks instead, so the axis is
// never unlabeled.
std::vector<Tick> log_ticks(double lo, double hi);
// Ticks at whole numbers only: every integer when the range spans at most 16, else 1-2-5 ticks.
std::vector<Tick> integer_ticks(double lo, double hi);
std::vector<Tick> axis_ticks(const PlotAxis& a);

struct Series {
  std::string name;  // legend entry, e.g. "kivi"
  std::vector<double> x, y;
  std::vector<std::string> labels;  // per point, shown on hover (e.g. "run 12: kivi-2")
  std::vector<int64_t> ids;         // per point, returned on click (run ids); may be empty
  std::vector<std::string> annotations{};  // per point, drawn beside it (static figures); may be empty
};

struct PlotData {
  std::string title, x_label, y_label;
  ScaleKind x_scale = ScaleKind::Linear, y_scale = ScaleKind::Linear;
  std::vector<Series> series;
  bool show_pareto = false;
  bool lower_y_is_better = true;  // NMSE: lower is better; cosine / greedy match: higher
  bool integer_x = false;         // x is an index (layer): whole-number ticks
  bool legend_outside = false;    // legend right of the plot, not over it (static figures)
};

struct PointRef {
  int series = -1, index = -1;
  bool valid() const { return series >= 0; }
  bool operator==(const PointRef&) const = default;
};

struct PlotPoint {
  double x = 0, y = 0;
  PointRef ref;
};

// Points no other point beats: none has x' <= x and y' at least as good with one strictly better.
// Returned sorted by x. Points with non-finite coordinates are ignored.
std::vector<PlotPoint> pareto_front(const std::vector<PlotPoint>& points, bool lower_y_is_better);
std::vector<PlotPoint> all_points(const PlotData& d);

// Axes spanning every finite point (positive only on log axes) with a small margin, mapped onto
// `area` (x left to right, y bottom to top).
struct PlotFrame {
  PlotAxis x, y;
};
PlotFrame fit_frame(const PlotData& d, const Rect& area);

// The point nearest to (mx, my) within `radius` pixels, or invalid.
PointRef hit_test(const PlotData& d, const PlotFrame& f, float mx, float my, float radius = 8.0f);

// A distinct, colour-blind-friendly colour per series (Okabe-Ito order).
Rgb series_color(int i);

}  // namespace kvscope::views
