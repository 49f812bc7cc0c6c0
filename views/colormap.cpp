#include "views/colormap.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace kvscope::views {
namespace {

#include "views/colormap_tables.inc"

const uint8_t (*table(Colormap c))[3] { return c == Colormap::Magma ? kMagma : kViridis; }

}  // namespace

const char* colormap_name(Colormap c) { return c == Colormap::Magma ? "magma" : "viridis"; }

Rgb colormap_sample(Colormap c, double t) {
  if (!(t >= 0)) t = 0;  // also catches NaN
  if (t > 1) t = 1;
  const auto* tab = table(c);
  double pos = t * 255.0;
  int i = std::min(254, static_cast<int>(pos));
  double f = pos - i;
  auto mix = [&](int ch) {
    return static_cast<uint8_t>(std::lround(tab[i][ch] * (1 - f) + tab[i + 1][ch] * f));
  };
  return {mix(0), mix(1), mix(2)};
}

double ValueScale::normalize(double v) const {
  if (std::isnan(v)) return v;
  double t;
  if (kind == ScaleKind::Log) {
    if (v <= 0) return 0;
    t = (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
  } else {
    t = (v - lo) / (hi - lo);
  }
  return std::clamp(t, 0.0, 1.0);
}

double ValueScale::value_at(double t) const {
  if (kind == ScaleKind::Log) return std::pow(10.0, std::log10(lo) + t * (std::log10(hi) - std::log10(lo)));
  return lo + t * (hi - lo);
}

ValueScale fit_scale(std::span<const double> values, ScaleKind kind) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values) {
    if (!std::isfinite(v) || (kind == ScaleKind::Log && v <= 0)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (lo > hi) return kind == ScaleKind::Log ? ValueScale{kind, 1e-3, 1} : ValueScale{kind, 0, 1};
  if (lo == hi) {
    // A flat field still needs a non-empty range; centre the value.
    if (kind == ScaleKind::Log) return {kind, lo / 10, hi * 10};
    double pad = lo == 0 ? 1 : std::abs(lo) * 0.5;
    return {kind, lo - pad, hi + pad};
  }
  return {kind, lo, hi};
}

std::string format_value(double v) {
  char buf[32];
  double a = std::abs(v);
  if (std::isnan(v)) return "n/a";
  if (a != 0 && (a < 1e-3 || a >= 1e5)) std::snprintf(buf, sizeof buf, "%.3g", v);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace kvscope::views
