#pragma once
// KLD CDF widget: the cumulative distribution of replay runs' per-step next-token KL (log x),
// overlaid, drawn on the window's ImDrawList by the line-plot widget. Returns the hovered/clicked
// run (PointRef -> ids). Keeps no state.
#include <imgui.h>

#include "views/kld_cdf_model.h"
#include "views/plot_view.h"

namespace kvscope::views {

PlotIntent draw_kld_cdf(const char* id, const std::vector<KldDistribution>& runs, ImVec2 size);

}  // namespace kvscope::views
