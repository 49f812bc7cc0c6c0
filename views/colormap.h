#pragma once
// Perceptual colormaps (matplotlib's viridis and magma, 256-entry tables) and the value scale
// that maps a number onto [0, 1] before it is coloured. Plain C++: no ImGui, testable alone.
#include <cstdint>
#include <span>
#include <string>

namespace kvscope::views {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

enum class Colormap { Viridis, Magma };
enum class ScaleKind { Linear, Log };

const char* colormap_name(Colormap c);
// t is clamped to [0, 1]; linear interpolation between the 256 table entries.
Rgb colormap_sample(Colormap c, double t);

// Maps values in [lo, hi] to [0, 1], linearly or by log10. Log scales need lo > 0; values <= 0
// on a log scale map to 0 (they are "below the scale", not an error). NaN maps to NaN.
struct ValueScale {
  ScaleKind kind = ScaleKind::Linear;
  double lo = 0, hi = 1;
  double normalize(double v) const;
  double value_at(double t) const;  // inverse of normalize for t in [0, 1]
};

// The scale that spans the finite values (positive ones only for Log). When every value is equal
// (or there are none) the range is widened so normalize() stays defined.
ValueScale fit_scale(std::span<const double> values, ScaleKind kind);

// Compact number for tooltips and colour bars: 3 significant digits, exponent form when tiny/huge.
std::string format_value(double v);

}  // namespace kvscope::views
