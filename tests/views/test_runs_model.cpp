// Runs table filtering/sorting, deltas, and the RD plot built from rows.
#include <catch2/catch.hpp>

#include <cmath>

#include "views/runs_model.h"

using namespace kvscope::views;

namespace {
std::vector<RunRow> sample_rows() {
  std::vector<RunRow> rows(4);
  rows[0] = {1, "2026-11-23T10:00", "qwen", "d.safetensors", "kivi", "kivi-2", "", "", 2.3, 100, 0.05, 0.02, 0.97, NAN};
  rows[1] = {2, "2026-11-23T10:05", "qwen", "d.safetensors", "kivi", "kivi-4", "best", "", 4.3, 180, 0.004, 0.002, 0.995, 0.9};
  rows[2] = {3, "2026-11-23T10:07", "llama", "e.safetensors", "uniform", "uniform-2", "", "baseline", 2.5, 110, 0.2, 0.1, 0.90, 0.5};
  rows[3] = {4, "2026-11-23T10:09", "qwen", "d.safetensors", "fp16", "fp16", "", "", 16, 640, 0, 0, 1, 1};
  return rows;
}
}  // namespace

TEST_CASE("filter matches every word, case-insensitive, across text columns") {
  auto rows = sample_rows();
  CHECK(filter_and_sort(rows, "", RunColumn::Id, true) == std::vector<int>{0, 1, 2, 3});
  CHECK(filter_and_sort(rows, "KIVI", RunColumn::Id, true) == std::vector<int>{0, 1});
  CHECK(filter_and_sort(rows, "qwen best", RunColumn::Id, true) == std::vector<int>{1});
  CHECK(filter_and_sort(rows, "baseline", RunColumn::Id, true) == std::vector<int>{2});  // the note
  CHECK(filter_and_sort(rows, "nothing-like-this", RunColumn::Id, true).empty());
}

TEST_CASE("sorting by numbers and text, NaN last both ways") {
  auto rows = sample_rows();
  CHECK(filter_and_sort(rows, "", RunColumn::Bits, true) == std::vector<int>{0, 2, 1, 3});
  CHECK(filter_and_sort(rows, "", RunColumn::KNmse, false) == std::vector<int>{2, 0, 1, 3});
  CHECK(filter_and_sort(rows, "", RunColumn::GreedyMatch, true) == std::vector<int>{2, 1, 3, 0});
  CHECK(filter_and_sort(rows, "", RunColumn::GreedyMatch, false) == std::vector<int>{3, 1, 2, 0});
  CHECK(filter_and_sort(rows, "", RunColumn::Method, true) == std::vector<int>{3, 0, 1, 2});
}

TEST_CASE("run_delta is b minus a") {
  auto rows = sample_rows();
  RunDelta d = run_delta(rows[0], rows[1]);
  CHECK(d.bits_per_element == Approx(2.0));
  CHECK(d.k_nmse == Approx(-0.046));
  CHECK(d.attn_cos == Approx(0.025));
}

TEST_CASE("RD plot: one series per method sorted by bits, run ids kept, front across methods") {
  auto rows = sample_rows();
  PlotData d = rd_plot(rows, RdMetric::KNmse);
  REQUIRE(d.series.size() == 3);  // fp16, kivi, uniform (map order)
  CHECK(d.series[1].name == "kivi");
  CHECK(d.series[1].x == std::vector<double>{2.3, 4.3});
  CHECK(d.series[1].ids == std::vector<int64_t>{1, 2});
  CHECK(d.x_scale == ScaleKind::Log);
  CHECK(d.y_scale == ScaleKind::Log);
  // fp16 has K NMSE 0: it stays in the data (log axes skip it when drawing).
  auto front = pareto_front(all_points(d), d.lower_y_is_better);
  REQUIRE(front.size() == 3);  // kivi-2 (2.3), kivi-4 (4.3), fp16 (16, error 0); uniform-2 is dominated
  CHECK(front[0].x == 2.3);
  CHECK(front[1].x == 4.3);
  CHECK(front[2].x == 16);
  PlotData g = rd_plot(rows, RdMetric::GreedyMatch);
  CHECK(!g.lower_y_is_better);
  CHECK(g.series[1].x.size() == 1);  // run 1 was never replayed
}
