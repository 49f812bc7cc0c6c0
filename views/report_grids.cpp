#include "views/report_grids.h"

#include <cmath>
#include <limits>

namespace kvscope::views {

const char* head_metric_name(HeadMetric m) {
  switch (m) {
    case HeadMetric::Nmse: return "NMSE";
    case HeadMetric::Mse: return "MSE (absolute)";
    case HeadMetric::CosDistance: return "1 - cosine";
    case HeadMetric::AttnCosDistance: return "1 - attention output cosine";
    case HeadMetric::BitsPerElement: return "bits / element";
  }
  return "?";
}

bool metric_per_kind(HeadMetric m) { return m != HeadMetric::AttnCosDistance; }

Heatmap head_heatmap(const QuantizeReport& r, HeadMetric m, char kind) {
  Heatmap h;
  h.rows = r.shape.layers;
  h.cols = r.shape.kv_heads;
  h.row_axis = "layer";
  h.col_axis = "KV head";
  h.title = metric_per_kind(m) ? std::string(kind == 'k' ? "K  " : "V  ") + head_metric_name(m) : head_metric_name(m);
  h.values.assign(static_cast<size_t>(h.rows) * h.cols, std::numeric_limits<double>::quiet_NaN());
  auto inside = [&](int l, int hd) { return l >= 0 && l < h.rows && hd >= 0 && hd < h.cols; };
  if (m == HeadMetric::AttnCosDistance) {
    for (const auto& a : r.attention)
      if (inside(a.layer, a.head)) h.values[static_cast<size_t>(a.layer) * h.cols + a.head] = 1.0 - a.out_cos_mean;
    return h;
  }
  for (const auto& hm : r.per_head) {
    if (hm.kind != kind || !inside(hm.layer, hm.head)) continue;
    double v = m == HeadMetric::Nmse          ? hm.nmse
             : m == HeadMetric::Mse           ? hm.mse
             : m == HeadMetric::CosDistance   ? 1.0 - hm.cos
                                              : hm.bits_per_element();
    h.values[static_cast<size_t>(hm.layer) * h.cols + hm.head] = v;
  }
  return h;
}

PlotData attention_by_layer(const std::vector<NamedReport>& runs, bool nmse) {
  PlotData d;
  d.title = nmse ? "Attention output NMSE per layer" : "Attention output 1 - cosine per layer";
  d.x_label = "layer";
  d.y_label = nmse ? "attention output NMSE (mean over KV heads)" : "1 - attention output cosine (mean over KV heads)";
  d.y_scale = ScaleKind::Log;
  for (const auto& run : runs) {
    if (!run.report) continue;
    Series s;
    s.name = run.name;
    int layers = run.report->shape.layers;
    std::vector<double> sum(layers, 0.0);
    std::vector<int> count(layers, 0);
    for (const auto& a : run.report->attention) {
      if (a.layer < 0 || a.layer >= layers) continue;
      sum[a.layer] += nmse ? a.out_nmse : 1.0 - a.out_cos_mean;
      ++count[a.layer];
    }
    for (int l = 0; l < layers; ++l) {
      if (!count[l]) continue;
      s.x.push_back(l);
      s.y.push_back(sum[l] / count[l]);
      s.labels.push_back(run.name + ", layer " + std::to_string(l));
    }
    d.series.push_back(std::move(s));
  }
  return d;
}

}  // namespace kvscope::views
