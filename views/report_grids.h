#pragma once
// Picks what the heatmap and per-layer plots show out of a QuantizeReport: plain field selection,
// no new measurements (those live in core/). No ImGui here.
#include <string>
#include <vector>

#include "core/quant/report.h"
#include "views/heatmap_model.h"
#include "views/plot_model.h"

namespace kvscope::views {

// Every metric is oriented so that hotter = worse, which is what the outlier hunt wants:
// cosines are shown as the distance 1 - cos (and work on a log scale).
// MSE is the absolute error (kvmix's ranking statistic): it finds heads with huge magnitudes,
// which NMSE (relative to the head's own energy) hides.
enum class HeadMetric { Nmse, Mse, CosDistance, AttnCosDistance, BitsPerElement };
inline constexpr HeadMetric kHeadMetrics[] = {HeadMetric::Nmse, HeadMetric::Mse, HeadMetric::CosDistance,
                                              HeadMetric::AttnCosDistance, HeadMetric::BitsPerElement};
const char* head_metric_name(HeadMetric m);
// Attention metrics belong to a (layer, KV head) pair, not to K or V separately.
bool metric_per_kind(HeadMetric m);

// rows = layers, cols = KV heads. `kind` is 'k' or 'v' (ignored for attention metrics).
// Cells the report has no value for are NaN.
Heatmap head_heatmap(const QuantizeReport& r, HeadMetric m, char kind);

// Per-layer attention output quality of several runs overlaid (the kvmix validation plot):
// x = layer, y = mean over KV heads of 1 - out_cos_mean (or of out_nmse).
struct NamedReport {
  std::string name;
  const QuantizeReport* report = nullptr;
};
PlotData attention_by_layer(const std::vector<NamedReport>& runs, bool nmse);

}  // namespace kvscope::views
