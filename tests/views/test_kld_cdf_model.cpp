// The KLD CDF plot value: one curve per run, log x, zero KL left out (and said so in the legend).
#include <catch2/catch.hpp>

#include "views/kld_cdf_model.h"

using namespace kvscope::views;

TEST_CASE("KLD CDF: one series per run, points (kld, fraction), zeros dropped", "[views]") {
  const std::vector<KldDistribution> runs = {
      {7, "run 7: kivi-2", {0.0, 0.5, 1.0}, {0.0, 0.002, 0.3}},
      {8, "run 8: fp16", {0.0, 0.5, 1.0}, {0.0, 0.0, 0.0}},
  };
  const PlotData d = kld_cdf_plot(runs);
  CHECK(d.x_scale == ScaleKind::Log);
  CHECK(d.y_scale == ScaleKind::Linear);
  REQUIRE(d.series.size() == 2);
  CHECK(d.series[0].x == std::vector<double>{0.002, 0.3});
  CHECK(d.series[0].y == std::vector<double>{0.5, 1.0});
  CHECK(d.series[0].ids == std::vector<int64_t>{7, 7});
  CHECK(d.series[1].x.empty());
  CHECK(d.series[1].name == "run 8: fp16 (KL 0 everywhere)");
}
