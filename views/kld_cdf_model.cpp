#include "views/kld_cdf_model.h"

#include <algorithm>

namespace kvscope::views {

PlotData kld_cdf_plot(const std::vector<KldDistribution>& runs) {
  PlotData d;
  d.title = "Next-token KL divergence: fraction of steps at or below";
  d.x_label = "KL(fp16 || quantized), nats";
  d.y_label = "fraction of steps";
  d.x_scale = ScaleKind::Log;
  d.y_scale = ScaleKind::Linear;
  d.lower_y_is_better = false;
  for (const auto& r : runs) {
    Series s;
    s.name = r.label;
    const size_t n = std::min(r.fraction.size(), r.kld.size());
    for (size_t i = 0; i < n; ++i) {
      if (!(r.kld[i] > 0)) continue;
      s.x.push_back(r.kld[i]);
      s.y.push_back(r.fraction[i]);
      s.labels.push_back(r.label);
      s.ids.push_back(r.run_id);
    }
    if (s.x.empty()) s.name += " (KL 0 everywhere)";
    d.series.push_back(std::move(s));
  }
  return d;
}

}  // namespace kvscope::views
