// Axes, ticks, the Pareto front and point hit-testing against hand-worked cases.
#include <catch2/catch.hpp>

#include <cmath>

#include "views/plot_model.h"

using namespace kvscope::views;

namespace {
std::vector<double> values(const std::vector<Tick>& t, bool majors_only = false) {
  std::vector<double> v;
  for (const auto& x : t)
    if (!majors_only || x.major) v.push_back(x.value);
  return v;
}
}  // namespace

TEST_CASE("linear ticks use 1-2-5 steps") {
  auto t = linear_ticks(0, 1, 5);
  std::vector<double> expect{0, 0.2, 0.4, 0.6, 0.8, 1};
  REQUIRE(t.size() == expect.size());
  for (size_t i = 0; i < t.size(); ++i) CHECK(t[i].value == Approx(expect[i]).margin(1e-12));
  CHECK(t[1].label == "0.2");
  auto u = linear_ticks(-3.2, 14.7, 4);  // raw step 4.475 -> 5
  CHECK(values(u) == std::vector<double>{0, 5, 10});
  CHECK(u[2].label == "10");
  auto w = linear_ticks(0.93, 0.995, 4);  // raw 0.01625 -> 0.02
  REQUIRE(w.size() == 3);
  CHECK(w[0].value == Approx(0.94));
  CHECK(w[0].label == "0.94");
  CHECK(linear_ticks(1, 1).empty());
}

TEST_CASE("log ticks: decades major, 2..9 minor, labels only when few decades") {
  auto t = log_ticks(3e-4, 2e-1);
  CHECK(values(t, true) == std::vector<double>{1e-3, 1e-2, 1e-1});
  CHECK(t.front().value == Approx(3e-4));  // first minor inside the range
  CHECK(!t.front().major);
  CHECK(t.front().label.empty());
  CHECK(t.back().value == Approx(2e-1));
  int majors = 0;
  for (const auto& x : t) majors += x.major;
  CHECK(t.size() == 27);  // 3..9e-4 (7) + 1..9e-3 (9) + 1..9e-2 (9) + 1e-1, 2e-1
  CHECK(majors == 3);
  // Inside one decade there is a single major: minors carry labels.
  auto s = log_ticks(2, 8);
  CHECK(values(s) == std::vector<double>{2, 3, 4, 5, 6, 7, 8});
  CHECK(s[0].label == "2");
  // Many decades: majors only.
  auto m = log_ticks(1e-9, 1);
  CHECK(m.size() == 10);
  CHECK(m[0].label == "1e-9");
}

TEST_CASE("log axis maps decades evenly and inverts") {
  PlotAxis a{ScaleKind::Log, 1e-3, 1e1, 100, 500};
  CHECK(a.to_pixel(1e-3) == Approx(100));
  CHECK(a.to_pixel(1e-1) == Approx(300));
  CHECK(a.to_pixel(1e1) == Approx(500));
  CHECK(a.from_pixel(400) == Approx(1.0));
  PlotAxis y{ScaleKind::Linear, 0, 10, 400, 0};  // y grows upwards
  CHECK(y.to_pixel(2.5) == Approx(300));
  CHECK(y.from_pixel(100) == Approx(7.5));
}

TEST_CASE("Pareto front: fewer bits and lower error") {
  std::vector<PlotPoint> pts = {
      {2, 0.10, {0, 0}}, {4, 0.01, {0, 1}}, {3, 0.20, {1, 0}},  // (3,0.2) is beaten by (2,0.1)
      {8, 0.001, {1, 1}}, {4, 0.05, {2, 0}},                     // (4,0.05) loses to (4,0.01)
      {16, 0.001, {2, 1}}, {NAN, 0.0, {2, 2}},                   // equal error at more bits: beaten
  };
  auto f = pareto_front(pts, true);
  REQUIRE(f.size() == 3);
  CHECK(f[0].ref == PointRef{0, 0});
  CHECK(f[1].ref == PointRef{0, 1});
  CHECK(f[2].ref == PointRef{1, 1});
}

TEST_CASE("Pareto front when higher y is better (cosine, greedy match)") {
  std::vector<PlotPoint> pts = {{2, 0.90, {0, 0}}, {3, 0.85, {0, 1}}, {4, 0.99, {0, 2}}, {5, 0.99, {0, 3}}};
  auto f = pareto_front(pts, false);
  REQUIRE(f.size() == 2);
  CHECK(f[0].ref.index == 0);
  CHECK(f[1].ref.index == 2);
}

TEST_CASE("fit_frame pads the data range and keeps log axes positive") {
  PlotData d;
  d.x_scale = ScaleKind::Log;
  d.series.push_back({"a", {1, 100}, {0.5, 1.5}, {}, {}});
  d.series.push_back({"b", {0, 10}, {1.0, 1.0}, {}, {}});  // x = 0 cannot be shown on a log axis
  PlotFrame f = fit_frame(d, {0, 0, 400, 300});
  CHECK(f.x.lo < 1);
  CHECK(f.x.lo > 0.5);
  CHECK(f.x.hi > 100);
  CHECK(f.x.hi < 200);
  CHECK(f.y.lo < 0.5);
  CHECK(f.y.hi > 1.5);
  CHECK(f.y.p0 == 300);  // bottom of the area is the low end of y
  CHECK(f.y.p1 == 0);
}

TEST_CASE("hit_test finds the nearest point within the radius") {
  PlotData d;
  d.series.push_back({"a", {0, 10}, {0, 10}, {}, {}});
  d.series.push_back({"b", {5}, {5}, {}, {}});
  PlotFrame f{{ScaleKind::Linear, 0, 10, 0, 100}, {ScaleKind::Linear, 0, 10, 100, 0}};
  CHECK(hit_test(d, f, 51, 49) == PointRef{1, 0});   // (5,5) sits at pixel (50,50)
  CHECK(hit_test(d, f, 97, 4) == PointRef{0, 1});    // (10,10) at (100,0)
  CHECK(!hit_test(d, f, 30, 30).valid());
  CHECK(hit_test(d, f, 30, 30, 40) == PointRef{1, 0});
}

TEST_CASE("series colours are distinct") {
  for (int i = 0; i < 8; ++i)
    for (int j = i + 1; j < 8; ++j) CHECK(!(series_color(i) == series_color(j)));
}
