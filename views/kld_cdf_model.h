#pragma once
// The KLD distribution of replay runs as a plot value: per run (and slice), the cumulative fraction
// of scored steps whose next-token KL is at most x, x on a log axis, one curve per run so runs
// overlay. Built from the stored quantiles of each slice's per-step KLD (fraction -> KLD).
// No ImGui here; views/kld_cdf_view.h draws it.
#include <cstdint>
#include <string>
#include <vector>

#include "views/plot_model.h"

namespace kvscope::views {

struct KldDistribution {
  int64_t run_id = 0;
  std::string label;                  // e.g. "run 12: kivi-2 · text:alice.txt"
  std::vector<double> fraction, kld;  // quantiles: fraction of steps (ascending, 0..1) and their KLD
};

// One series per distribution: points (kld, fraction) with kld > 0 (a log axis cannot show 0: a run
// whose every step has KL 0, e.g. fp16, gets an empty curve and " (KL 0 everywhere)" in its name).
PlotData kld_cdf_plot(const std::vector<KldDistribution>& runs);

}  // namespace kvscope::views
