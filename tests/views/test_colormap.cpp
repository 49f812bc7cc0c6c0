// Colormaps against matplotlib's published anchor colours, and the value scale by hand.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "views/colormap.h"

using namespace kvscope::views;

TEST_CASE("viridis and magma hit their published anchor colours") {
  // viridis: #440154 at 0, #21918c at 0.5, #fde725 at 1; magma: #000004 at 0, #fcfdbf at 1.
  CHECK(colormap_sample(Colormap::Viridis, 0.0) == Rgb{0x44, 0x01, 0x54});
  CHECK(colormap_sample(Colormap::Viridis, 128.0 / 255.0) == Rgb{0x21, 0x91, 0x8c});
  CHECK(colormap_sample(Colormap::Viridis, 1.0) == Rgb{0xfd, 0xe7, 0x25});
  CHECK(colormap_sample(Colormap::Magma, 0.0) == Rgb{0x00, 0x00, 0x04});
  CHECK(colormap_sample(Colormap::Magma, 1.0) == Rgb{0xfc, 0xfd, 0xbf});
}

TEST_CASE("colormap samples clamp and interpolate") {
  CHECK(colormap_sample(Colormap::Viridis, -3.0) == colormap_sample(Colormap::Viridis, 0.0));
  CHECK(colormap_sample(Colormap::Viridis, 7.0) == colormap_sample(Colormap::Viridis, 1.0));
  CHECK(colormap_sample(Colormap::Viridis, NAN) == colormap_sample(Colormap::Viridis, 0.0));
  // Halfway between entries 0 {68,1,84} and 1 {68,2,86}: {68, 1.5 -> 2, 85}.
  CHECK(colormap_sample(Colormap::Viridis, 0.5 / 255.0) == Rgb{68, 2, 85});
}

TEST_CASE("perceptual maps get brighter monotonically") {
  // Luma (Rec. 601) must rise along both maps: that is what makes them readable in grey.
  for (Colormap c : {Colormap::Viridis, Colormap::Magma}) {
    double prev = -1;
    for (int i = 0; i <= 32; ++i) {
      Rgb p = colormap_sample(c, i / 32.0);
      double luma = 0.299 * p.r + 0.587 * p.g + 0.114 * p.b;
      CHECK(luma > prev);
      prev = luma;
    }
  }
}

TEST_CASE("linear and log value scales") {
  ValueScale lin{ScaleKind::Linear, 2, 6};
  CHECK(lin.normalize(2) == 0.0);
  CHECK(lin.normalize(5) == Approx(0.75));
  CHECK(lin.normalize(10) == 1.0);
  CHECK(lin.value_at(0.25) == Approx(3));
  ValueScale lg{ScaleKind::Log, 1e-4, 1};
  CHECK(lg.normalize(1e-2) == Approx(0.5));
  CHECK(lg.normalize(1e-3) == Approx(0.25));
  CHECK(lg.normalize(0) == 0.0);
  CHECK(lg.normalize(-1) == 0.0);
  CHECK(std::isnan(lg.normalize(NAN)));
  CHECK(lg.value_at(0.75) == Approx(1e-1));
}

TEST_CASE("fit_scale spans the finite values and survives degenerate input") {
  std::vector<double> v{0.5, NAN, 0.02, 3.0, INFINITY};
  ValueScale lin = fit_scale(v, ScaleKind::Linear);
  CHECK(lin.lo == 0.02);
  CHECK(lin.hi == 3.0);
  std::vector<double> w{0.0, -1.0, 1e-3, 10.0};
  ValueScale lg = fit_scale(w, ScaleKind::Log);  // zero and negatives cannot sit on a log axis
  CHECK(lg.lo == 1e-3);
  CHECK(lg.hi == 10.0);
  std::vector<double> flat{4.0, 4.0};
  ValueScale f = fit_scale(flat, ScaleKind::Linear);
  CHECK(f.lo < 4.0);
  CHECK(f.hi > 4.0);
  CHECK(f.normalize(4.0) == Approx(0.5));
  ValueScale none = fit_scale(std::vector<double>{}, ScaleKind::Log);
  CHECK(none.lo > 0);
  CHECK(none.hi > none.lo);
}

TEST_CASE("format_value") {
  CHECK(format_value(0.5) == "0.5");
  CHECK(format_value(1.23456e-5) == "1.23e-05");
  CHECK(format_value(NAN) == "n/a");
}
