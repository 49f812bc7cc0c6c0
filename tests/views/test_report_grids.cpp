// Selecting heatmap values and per-layer series out of a QuantizeReport.
#include <catch2/catch.hpp>

#include <cmath>

#include "views/report_grids.h"

using namespace kvscope;
using namespace kvscope::views;

namespace {
QuantizeReport small_report() {
  QuantizeReport r;
  r.shape.layers = 2;
  r.shape.kv_heads = 2;
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h)
      for (char kind : {'k', 'v'}) {
        HeadMetrics m;
        m.layer = l;
        m.head = h;
        m.kind = kind;
        m.nmse = (kind == 'k' ? 0.1 : 0.01) * (1 + l * 2 + h);
        m.cos = 1 - m.nmse / 2;
        m.mse = 7.0 * (l + 1);
        m.bits = 100 * (1 + h);
        m.elements = 40;
        if (!(l == 1 && h == 0)) r.per_head.push_back(m);  // one head missing on purpose
      }
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      AttentionMetrics a;
      a.layer = l;
      a.head = h;
      a.out_cos_mean = 1 - 0.001 * (l + 1) * (h + 1);
      a.out_nmse = 0.002 * (l + 1);
      r.attention.push_back(a);
    }
  return r;
}
}  // namespace

TEST_CASE("head heatmap picks the metric of the requested kind") {
  auto r = small_report();
  Heatmap k = head_heatmap(r, HeadMetric::Nmse, 'k');
  REQUIRE(k.rows == 2);
  REQUIRE(k.cols == 2);
  CHECK(k.at(0, 0) == Approx(0.1));
  CHECK(k.at(0, 1) == Approx(0.2));
  CHECK(std::isnan(k.at(1, 0)));
  CHECK(k.at(1, 1) == Approx(0.4));
  Heatmap v = head_heatmap(r, HeadMetric::CosDistance, 'v');
  CHECK(v.at(1, 1) == Approx(0.02));
  CHECK(head_heatmap(r, HeadMetric::Mse, 'v').at(1, 1) == Approx(14.0));
  Heatmap b = head_heatmap(r, HeadMetric::BitsPerElement, 'k');
  CHECK(b.at(0, 1) == Approx(5.0));
  Heatmap a = head_heatmap(r, HeadMetric::AttnCosDistance, 'k');
  CHECK(a.at(1, 1) == Approx(0.004));
  CHECK(!metric_per_kind(HeadMetric::AttnCosDistance));
}

TEST_CASE("attention by layer averages the KV heads of each layer") {
  auto r = small_report();
  PlotData d = attention_by_layer({{"run", &r}}, false);
  REQUIRE(d.series.size() == 1);
  CHECK(d.series[0].x == std::vector<double>{0, 1});
  CHECK(d.series[0].y[0] == Approx((0.001 + 0.002) / 2));
  CHECK(d.series[0].y[1] == Approx((0.002 + 0.004) / 2));
  PlotData n = attention_by_layer({{"run", &r}}, true);
  CHECK(n.series[0].y[1] == Approx(0.004));
}
