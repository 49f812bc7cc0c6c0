#pragma once
// What `kvscope report` shows, computed from plain run values: method families, runs grouped by
// dump, the per-family rate-distortion curves, which run gets the heatmap (and why), which runs of
// other families sit at a similar rate for the per-layer overlay, and the per-layer attention
// statistics. No ImGui, no SQLite: the app copies stored runs into ReportRun values.
#include <cstdint>
#include <string>
#include <vector>

#include "core/quant/report.h"
#include "views/plot_model.h"

namespace kvscope::views {

struct ReportReplayMetric {
  std::string slice, name;
  double value = 0;
};

struct ReportRun {
  int64_t id = 0;
  std::string kind = "quantize";  // "quantize" | "replay"
  std::string created, workload;
  std::string dump_key;           // what identifies the dump (content hash, else path)
  std::vector<std::string> tags;
  QuantizeReport report;
  std::vector<ReportReplayMetric> replay;
};

// The distortion the RD curves and the run choice use. Every value is oriented lower = better:
// cosines become 1 - cos, so all of them read on a log axis.
enum class ReportMetric { AttnCosMean, AttnCosMin, AttnNmse, AttnKl, KNmse, VNmse };
inline constexpr ReportMetric kReportMetrics[] = {ReportMetric::AttnCosMean, ReportMetric::AttnCosMin,
                                                  ReportMetric::AttnNmse,    ReportMetric::AttnKl,
                                                  ReportMetric::KNmse,       ReportMetric::VNmse};
const char* report_metric_key(ReportMetric m);    // "attn_cos_mean", ... (the --metric names)
const char* report_metric_label(ReportMetric m);  // axis label, e.g. "1 - attention output cosine (mean)"
// Error listing the known keys when `key` is none of them.
ReportMetric parse_report_metric(const std::string& key);
// The run's distortion under `m`; NaN when it was not measured (no attention metrics).
double report_metric_value(const QuantizeReport& r, ReportMetric m);

// A policy's method family: the preset stem of "<family>-<n>" names, with sweep variants
// "<preset>@<bits>b" / "<preset>@<rate>r" folded into their preset ("uniform-4@3b" -> "uniform",
// "kvsmooth-4" -> "kvsmooth"); any other name falls back to the run's method.
std::string method_family(const std::string& policy_name, const std::string& method);

// Quantize runs of one dump (the RD curves compare runs on the same data only).
struct DumpGroup {
  std::string key;
  std::string model, dump;  // model id and dump path of its first run
  int tokens = 0;
  std::vector<int> runs;    // indices into the run list, by bits/element then id
};
// Groups in order of size (most runs first, then first appearance). Replay runs belong to none.
std::vector<DumpGroup> group_by_dump(const std::vector<ReportRun>& runs);

// x = bits/element (log), y = `m` (log), one series per method family (named by it, sorted by
// bits), Pareto front on, ids = run ids, labels and annotations = policy names. Runs without a finite positive
// value under `m` (e.g. fp16, error 0) are left out.
PlotData rd_curves(const std::vector<ReportRun>& runs, const DumpGroup& g, ReportMetric m);

// The run the heatmap and per-layer figures are about, when the user names none: within the
// largest dump group, the family with the most points on the Pareto front of `m` (ties: the
// family whose cheapest front point is cheaper, then by name) is the best method; its run with
// the fewest bits/element (ties: better `m`, then lower id) is chosen. fp16 runs and runs without
// a finite `m` never count. index = -1 when nothing qualifies.
struct RunChoice {
  int index = -1;
  std::string family;
  std::string reason;  // one sentence for the report
};
RunChoice choose_run(const std::vector<ReportRun>& runs, const std::vector<DumpGroup>& groups, ReportMetric m);

// The chosen run first, then for every other family in its dump group the run whose bits/element
// is closest to the chosen one's (by ratio), if within a factor `max_ratio`; runs without
// attention metrics are skipped. Families in name order.
std::vector<int> similar_rate_runs(const std::vector<ReportRun>& runs, const DumpGroup& g, int chosen,
                                   double max_ratio = 1.5);

// Per-layer attention output quality of the given runs: y = 1 - (mean over KV heads of
// out_cos_mean), or with `worst` 1 - (min over KV heads of out_cos_mean). x = layer (integer
// ticks), log y, one series per run named "<policy> (<bits> b)".
PlotData attention_layers(const std::vector<ReportRun>& runs, const std::vector<int>& which, bool worst);

// Replay runs of one model on one workload slice: replay figures compare runs that decoded the
// same prompts only.
struct ReplayGroup {
  std::string model, workload, slice;
  std::vector<int> runs;  // indices into the run list, by bits per KV entry then id
};
// Groups in order of size (most runs first, then first appearance). Quantize runs belong to none.
std::vector<ReplayGroup> group_replays(const std::vector<ReportRun>& runs);
// A replay metric of one slice of the run; NaN when it was not stored.
double replay_value(const ReportRun& r, const std::string& slice, const std::string& name);

// x = avg_bits_per_kv_token (log), y = next_token_kl (log), one series per method family (sorted
// by bits), Pareto front on, ids = run ids, labels and annotations = policy names. Runs without a
// finite positive KL (fp16 and anything equal to the reference: KL 0) are left out.
PlotData replay_curves(const std::vector<ReportRun>& runs, const ReplayGroup& g);

// The finite values of both heatmaps, for one shared colour scale.
std::vector<double> joint_values(const Heatmap& a, const Heatmap& b);

}  // namespace kvscope::views
