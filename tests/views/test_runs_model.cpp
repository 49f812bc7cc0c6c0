// Runs table filtering/sorting, deltas, and the RD plot built from rows.
#include <catch2/catch.hpp>

#include <algorithm>

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
  rows[2].dump = "d.safetensors";  // one dump: series are methods
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
  CHECK(g.series[1].ids == std::vector<int64_t>{2});  // run 1 was never replayed
  CHECK(g.x_label == "bits / KV entry (replayed cache)");
  // Next-token KL: replayed runs only, log y, lower is better; fp16 (KL 0) stays in the data.
  rows[0].next_token_kl = NAN;
  rows[1].next_token_kl = 0.01;
  rows[2].next_token_kl = 0.05;
  rows[3].next_token_kl = 0;
  PlotData kl = rd_plot(rows, RdMetric::NextTokenKl);
  CHECK(kl.lower_y_is_better);
  CHECK(kl.y_scale == ScaleKind::Log);
  REQUIRE(kl.series.size() == 3);
  CHECK(kl.series[1].ids == std::vector<int64_t>{2});
  CHECK(kl.series[2].y == std::vector<double>{0.05});
  CHECK(filter_and_sort(rows, "", RunColumn::NextTokenKl, true) == std::vector<int>{3, 1, 2, 0});
  CHECK(run_delta(rows[1], rows[2]).next_token_kl == Approx(0.04));
  // A row without a rate (a replay that stored no bits) is not plotted; its method has no series.
  rows[2].bits_per_element = NAN;
  CHECK(rd_plot(rows, RdMetric::NextTokenKl).series.size() == 2);
  // The 99th-percentile KL axis: the rows' own kld_p99, not their mean KL.
  for (auto& r : rows) r.kld_p99 = NAN;
  rows[1].kld_p99 = 0.3;
  rows[3].kld_p99 = 0.02;
  PlotData p99 = rd_plot(rows, RdMetric::KldP99);
  CHECK(p99.lower_y_is_better);
  CHECK(p99.y_scale == ScaleKind::Log);
  CHECK(p99.y_label == "99th percentile next-token KL, nats (replay)");
  CHECK(p99.x_label == "bits / KV entry (replayed cache)");
  std::vector<double> ys;
  for (const auto& sr : p99.series) ys.insert(ys.end(), sr.y.begin(), sr.y.end());
  std::sort(ys.begin(), ys.end());
  CHECK(ys == std::vector<double>{0.02, 0.3});
  CHECK(std::string(rd_metric_key(RdMetric::KldP99)) == "kld_p99");
}

TEST_CASE("RD plot: runs on different dumps or workloads are never joined by one line") {
  auto rows = sample_rows();  // run 3 measured e.safetensors, the others d.safetensors
  PlotData d = rd_plot(rows, RdMetric::KNmse);
  REQUIRE(d.series.size() == 3);
  CHECK(d.series[0].name == "fp16 · d.safetensors");
  CHECK(d.series[1].name == "kivi · d.safetensors");
  CHECK(d.series[1].ids == std::vector<int64_t>{1, 2});
  CHECK(d.series[2].name == "uniform · e.safetensors");
  CHECK(!d.show_pareto);
  // Two dumps with one file name in different folders: named by their whole paths, not joined.
  rows[0].dump = "/data/d.safetensors";
  rows[2].dump = "/data/e.safetensors";
  d = rd_plot(rows, RdMetric::KNmse);
  REQUIRE(d.series.size() == 4);
  CHECK(d.series[0].name == "fp16 · d.safetensors");
  CHECK(d.series[1].name == "kivi · /data/d.safetensors");
  CHECK(d.series[1].ids == std::vector<int64_t>{1});
  CHECK(d.series[2].name == "kivi · d.safetensors");
  // Replay workloads: the same method on two workloads is two series.
  std::vector<RunRow> r(3);
  r[0] = {1, "", "m", "text:/books/a.txt;window=256", "uniform", "uniform-2", "", "", 3, NAN, NAN, NAN, NAN, 0.8, 0.02};
  r[1] = {2, "", "m", "passkey:len=256", "uniform", "uniform-2", "", "", 3, NAN, NAN, NAN, NAN, 0.9, 0.01};
  r[2] = {3, "", "m", "passkey:len=256", "uniform", "uniform-4", "", "", 5, NAN, NAN, NAN, NAN, 1.0, 0.001};
  PlotData k = rd_plot(r, RdMetric::NextTokenKl);
  REQUIRE(k.series.size() == 2);
  CHECK(k.series[0].name == "uniform · a.txt;window=256");
  CHECK(k.series[0].ids == std::vector<int64_t>{1});
  CHECK(k.series[1].name == "uniform · passkey:len=256");
  CHECK(k.series[1].ids == std::vector<int64_t>{2, 3});
  CHECK(rd_plot(r, RdMetric::KNmse).series.empty());  // replay runs have no tensor errors
}
