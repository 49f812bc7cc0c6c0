#pragma once
// Stored replay runs -> the KLD CDF view's values (views/kld_cdf_view.h): one distribution per
// (run, slice) from the run's stored KLD quantiles (table replay_kld_quantiles).
#include <vector>

#include "storage/run_store.h"
#include "views/kld_cdf_model.h"

namespace kvscope::gui {

// Runs without quantiles (quantize runs, replays stored before schema 4) give nothing.
std::vector<views::KldDistribution> kld_distributions(const std::vector<StoredRun>& runs);

}  // namespace kvscope::gui
