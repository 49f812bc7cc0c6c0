// Heatmap cell geometry, hit-testing and colours, worked out by hand.
#include <catch2/catch.hpp>

#include <cmath>

#include "views/heatmap_model.h"

using namespace kvscope::views;

TEST_CASE("grid cells tile the area and the mouse finds them") {
  // 4 rows x 2 cols over a 200 x 400 area at (100, 50): cells are 100 x 100.
  GridLayout g{{100, 50, 300, 450}, 4, 2, 2.0f};
  Rect r = g.cell_rect(2, 1);
  CHECK(r.x0 == 201);
  CHECK(r.x1 == 299);
  CHECK(r.y0 == 251);
  CHECK(r.y1 == 349);
  CHECK(g.hit_test(250, 300) == CellRef{2, 1});
  CHECK(g.hit_test(100, 50) == CellRef{});    // the corner sits in the half-gap
  CHECK(g.hit_test(101.5f, 51.5f) == CellRef{0, 0});
  CHECK(g.hit_test(299.5f, 449.5f) == CellRef{});  // gap at the far edge
  CHECK(g.hit_test(298.5f, 448.5f) == CellRef{3, 1});
  CHECK(g.hit_test(200.2f, 120) == CellRef{});  // the gap between columns
  CHECK(!g.hit_test(99, 100).valid());
  CHECK(!g.hit_test(150, 450).valid());   // bottom edge is outside (half-open)
}

TEST_CASE("every interior pixel centre hits the cell whose rect contains it") {
  GridLayout g{{0, 0, 37, 53}, 7, 3, 1.0f};
  for (float y = 0.5f; y < 53; y += 1)
    for (float x = 0.5f; x < 37; x += 1) {
      CellRef c = g.hit_test(x, y);
      if (c.valid()) CHECK(g.cell_rect(c.row, c.col).contains(x, y));
    }
}

TEST_CASE("heatmap colours follow the scale; NaN is the missing colour; hottest cell") {
  Heatmap h;
  h.rows = 2;
  h.cols = 2;
  h.values = {1e-4, 1e-2, NAN, 1.0};
  ValueScale s{ScaleKind::Log, 1e-4, 1};
  auto colors = heatmap_colors(h, s, Colormap::Viridis, {1, 2, 3});
  REQUIRE(colors.size() == 4);
  CHECK(colors[0] == colormap_sample(Colormap::Viridis, 0));
  CHECK(colors[1] == colormap_sample(Colormap::Viridis, 0.5));
  CHECK(colors[2] == Rgb{1, 2, 3});
  CHECK(colors[3] == colormap_sample(Colormap::Viridis, 1));
  CHECK(hottest_cell(h) == CellRef{1, 1});
  Heatmap empty;
  CHECK(!hottest_cell(empty).valid());
}

TEST_CASE("bin_max keeps the worst item of each bin") {
  std::vector<float> v{1, 9, 2, 3, 4, 5, 0, 7, 8, 6};
  CHECK(bin_max(v, 3) == std::vector<double>{9, 5, 8});  // bins [0,3) [3,6) [6,10)
  CHECK(bin_range(2, 3, 10) == std::pair<int, int>{6, 10});
  CHECK(bin_max(v, 50).size() == 10);  // never more bins than items
  CHECK(bin_max({}, 4).empty());
}
