#include "views/kld_cdf_view.h"

namespace kvscope::views {

PlotIntent draw_kld_cdf(const char* id, const std::vector<KldDistribution>& runs, ImVec2 size) {
  return draw_plot(id, kld_cdf_plot(runs), size);
}

}  // namespace kvscope::views
