#include "views/plot_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace kvscope::views {

namespace {

double to_axis_space(ScaleKind k, double v) { return k == ScaleKind::Log ? std::log10(v) : v; }

std::string tick_label(double v, double step) {
  char buf[32];
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) {
    std::snprintf(buf, sizeof buf, "%.0e", v);
    return buf;
  }
  // Enough decimals to tell neighbouring ticks apart, no more.
  int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  std::snprintf(buf, sizeof buf, "%.*f", std::clamp(decimals, 0, 6), std::abs(v) < step * 1e-9 ? 0.0 : v);
  return buf;
}

}  // namespace

float PlotAxis::to_pixel(double v) const {
  double a = to_axis_space(kind, lo), b = to_axis_space(kind, hi);
  double t = (to_axis_space(kind, v) - a) / (b - a);
  return static_cast<float>(p0 + t * (p1 - p0));
}

double PlotAxis::from_pixel(float p) const {
  double a = to_axis_space(kind, lo), b = to_axis_space(kind, hi);
  double s = a + (p - p0) / double(p1 - p0) * (b - a);
  return kind == ScaleKind::Log ? std::pow(10.0, s) : s;
}

std::vector<Tick> linear_ticks(double lo, double hi, int target) {
  std::vector<Tick> out;
  if (!(hi > lo) || target < 1) return out;
  double raw = (hi - lo) / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  double first = std::ceil(lo / step - 1e-9) * step;
  for (int i = 0;; ++i) {
    double v = first + i * step;
    if (v > hi + step * 1e-9) break;
    if (std::abs(v) < step * 1e-9) v = 0;
    out.push_back({v, tick_label(v, step), true});
  }
  return out;
}

std::vector<Tick> log_ticks(double lo, double hi) {
  std::vector<Tick> out;
  if (!(lo > 0) || !(hi > lo)) return out;
  int k0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int k1 = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
  // Too many decades: skip minors so the axis stays readable.
  bool with_minors = k1 - k0 <= 6;
  for (int k = k0; k <= k1; ++k) {
    double decade = std::pow(10.0, k);
    for (int m = 1; m <= 9; ++m) {
      if (m > 1 && !with_minors) break;
      double v = m * decade;
      if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
      char buf[32];
      if (m == 1) {
        if (k >= -2 && k <= 3) std::snprintf(buf, sizeof buf, "%g", v);
        else std::snprintf(buf, sizeof buf, "1e%d", k);
        out.push_back({v, buf, true});
      } else {
        std::snprintf(buf, sizeof buf, "%g", v);
        out.push_back({v, buf, false});
      }
    }
  }
  int majors = static_cast<int>(std::count_if(out.begin(), out.end(), [](const Tick& t) { return t.major; }));
  // Two decades visible: 2x and 5x keep their labels (values stay readable); more: majors only.
  if (majors >= 2)
    for (auto& t : out) {
      double m = t.value / std::pow(10.0, std::floor(std::log10(t.value) + 1e-9));
      bool two_or_five = std::abs(m - 2) < 1e-6 || std::abs(m - 5) < 1e-6;
      if (!t.major && !(majors == 2 && two_or_five)) t.label.clear();
    }
  // A range too narrow to hold two of the 1..9 x 10^k values (0.144 .. 0.168): plain 1-2-5 ticks,
  // placed on the log axis, so it is never unlabeled.
  int labelled = static_cast<int>(std::count_if(out.begin(), out.end(), [](const Tick& t) { return !t.label.empty(); }));
  if (labelled < 2) return linear_ticks(lo, hi, 4);
  return out;
}

std::vector<Tick> integer_ticks(double lo, double hi) {
  std::vector<Tick> t;
  if (hi - lo > 16) return linear_ticks(lo, hi);  // 1-2-5 steps of 2 or more
  // Up to 16 indices: every one gets its tick.
  for (double v = std::ceil(lo); v <= hi; v += 1) t.push_back({v, std::to_string(static_cast<long long>(v)), true});
  return t;
}

std::vector<Tick> axis_ticks(const PlotAxis& a) {
  if (a.kind == ScaleKind::Log) return log_ticks(a.lo, a.hi);
  return a.integer ? integer_ticks(a.lo, a.hi) : linear_ticks(a.lo, a.hi);
}

std::vector<PlotPoint> all_points(const PlotData& d) {
  std::vector<PlotPoint> pts;
  for (int s = 0; s < static_cast<int>(d.series.size()); ++s) {
    const Series& ser = d.series[s];
    size_t n = std::min(ser.x.size(), ser.y.size());
    for (size_t i = 0; i < n; ++i) pts.push_back({ser.x[i], ser.y[i], {s, static_cast<int>(i)}});
  }
  return pts;
}

std::vector<PlotPoint> pareto_front(const std::vector<PlotPoint>& points, bool lower_y_is_better) {
  std::vector<PlotPoint> pts;
  for (const auto& p : points)
    if (std::isfinite(p.x) && std::isfinite(p.y)) pts.push_back(p);
  // Goodness in "higher is better" form so one sweep handles both directions.
  auto good = [&](const PlotPoint& p) { return lower_y_is_better ? -p.y : p.y; };
  // Sort by x ascending, best y first among equal x; sweep keeping points that improve on all cheaper ones.
  std::sort(pts.begin(), pts.end(), [&](const PlotPoint& a, const PlotPoint& b) {
    return a.x != b.x ? a.x < b.x : good(a) > good(b);
  });
  std::vector<PlotPoint> front;
  double best = -std::numeric_limits<double>::infinity();
  for (const auto& p : pts) {
    if (good(p) > best) {
      front.push_back(p);
      best = good(p);
    }
  }
  return front;
}

PlotFrame fit_frame(const PlotData& d, const Rect& area) {
  auto fit = [](ScaleKind kind, const std::vector<double>& vals, float p0, float p1) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (double v : vals) {
      if (!std::isfinite(v) || (kind == ScaleKind::Log && v <= 0)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    PlotAxis a{kind, 0, 1, p0, p1};
    if (lo > hi) {
      if (kind == ScaleKind::Log) a.lo = 1e-3;
      return a;
    }
    if (kind == ScaleKind::Log) {
      double l = std::log10(lo), h = std::log10(hi);
      double pad = h > l ? (h - l) * 0.06 : 0.5;
      a.lo = std::pow(10.0, l - pad);
      a.hi = std::pow(10.0, h + pad);
    } else {
      double pad = hi > lo ? (hi - lo) * 0.06 : (lo == 0 ? 1 : std::abs(lo) * 0.1);
      a.lo = lo - pad;
      a.hi = hi + pad;
    }
    return a;
  };
  std::vector<double> xs, ys;
  for (const auto& s : d.series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  PlotFrame f{fit(d.x_scale, xs, area.x0, area.x1), fit(d.y_scale, ys, area.y1, area.y0)};
  f.x.integer = d.integer_x;
  return f;
}

PointRef hit_test(const PlotData& d, const PlotFrame& f, float mx, float my, float radius) {
  PointRef best;
  float best_d2 = radius * radius;
  for (const auto& p : all_points(d)) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    if ((d.x_scale == ScaleKind::Log && p.x <= 0) || (d.y_scale == ScaleKind::Log && p.y <= 0)) continue;
    float dx = f.x.to_pixel(p.x) - mx, dy = f.y.to_pixel(p.y) - my;
    float d2 = dx * dx + dy * dy;
    if (d2 <= best_d2) {
      best_d2 = d2;
      best = p.ref;
    }
  }
  return best;
}

Rgb series_color(int i) {
  static const Rgb kOkabeIto[] = {{230, 159, 0}, {86, 180, 233}, {0, 158, 115}, {240, 228, 66},
                                  {0, 114, 178}, {213, 94, 0},   {204, 121, 167}, {200, 200, 200}};
  return kOkabeIto[((i % 8) + 8) % 8];
}

}  // namespace kvscope::views
