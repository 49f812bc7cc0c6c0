#pragma once
// What the runs table and the rate-distortion plot draw: one plain row per stored run, filtering,
// sorting, pairwise deltas, and the per-method RD curves with their Pareto front. No ImGui here.
#include <cstdint>
#include <string>
#include <vector>

#include "views/plot_model.h"

namespace kvscope::views {

struct RunRow {
  int64_t id = 0;
  std::string created;  // ISO time
  std::string model, dump, method, policy, tag, note;  // dump: the dump path, or a replay's workload
  double bits_per_element = 0, bytes_per_token = 0;
  double k_nmse = 0, v_nmse = 0;
  double attn_cos = 1;      // mean attention output cosine (NaN when not measured)
  double greedy_match = 0;  // replay greedy match ratio (NaN when not replayed)
  double next_token_kl = 0;  // replay next-token KL to the fp16 cache, nats (NaN when not replayed)
  double kld_p99 = 0;        // replay: 99th percentile of the per-step KL (largest over slices), NaN when absent
  bool replay = false;       // a replay run: no per-head tensors to show
};
// Replay runs have no bits/element of a dump; their bits_per_element is the stored bits per KV
// entry of the replayed cache (the same quantity: scales, fp16 windows and sinks included).

enum class RunColumn { Id, Created, Model, Method, Policy, Bits, BytesPerToken, KNmse, VNmse, AttnCos, GreedyMatch, NextTokenKl, Tag };
inline constexpr int kRunColumnCount = 13;
const char* run_column_name(RunColumn c);

// Indices of the rows whose text columns contain every whitespace-separated word of `filter`
// (case-insensitive), sorted by `column`. Sorting is stable; NaN sorts last in either direction.
std::vector<int> filter_and_sort(const std::vector<RunRow>& rows, const std::string& filter, RunColumn column,
                                 bool ascending);

// b - a for every numeric column, for the compare panel.
struct RunDelta {
  double bits_per_element, bytes_per_token, k_nmse, v_nmse, attn_cos, greedy_match, next_token_kl;
};
RunDelta run_delta(const RunRow& a, const RunRow& b);

enum class RdMetric { KNmse, VNmse, AttnCosDistance, GreedyMatch, NextTokenKl, KldP99 };  // the last three: replay runs
inline constexpr RdMetric kRdMetrics[] = {RdMetric::KNmse,       RdMetric::VNmse,       RdMetric::AttnCosDistance,
                                          RdMetric::GreedyMatch, RdMetric::NextTokenKl, RdMetric::KldP99};
const char* rd_metric_name(RdMetric m);  // axis label
const char* rd_metric_key(RdMetric m);   // script/layout name: k_nmse v_nmse attn_cos greedy kl kld_p99

// x = bits/element, y = the metric; one series per method (sorted by bits), ids = run ids,
// log y for errors, Pareto front on. Rows without a finite value are left out. When the plotted
// rows measured more than one dump or workload, a series is one method on one of them, named
// "<method> · <dump or workload>" (its last path component): a line never joins different data,
// and no Pareto front is drawn across them.
PlotData rd_plot(const std::vector<RunRow>& rows, RdMetric m);

}  // namespace kvscope::views
