#include "app/gui/kld_cdf_data.h"

#include <algorithm>

#include <fmt/format.h>

namespace kvscope::gui {

std::vector<views::KldDistribution> kld_distributions(const std::vector<StoredRun>& runs) {
  std::vector<views::KldDistribution> out;
  for (const StoredRun& r : runs) {
    std::vector<std::string> slices;  // in order of first appearance
    for (const auto& q : r.kld_quantiles)
      if (std::find(slices.begin(), slices.end(), q.slice) == slices.end()) slices.push_back(q.slice);
    for (const auto& slice : slices) {
      views::KldDistribution d;
      d.run_id = r.id;
      d.label = fmt::format("run {}: {}{}", r.id, r.report.policy_name.empty() ? r.report.method : r.report.policy_name,
                            slices.size() > 1 ? " · " + slice : std::string());
      for (const auto& q : r.kld_quantiles)
        if (q.slice == slice) d.fraction.push_back(q.fraction), d.kld.push_back(q.kld);
      out.push_back(std::move(d));
    }
  }
  return out;
}

}  // namespace kvscope::gui
