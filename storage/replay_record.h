#pragma once
// What a replay run stores, built one way for `kvscope replay`, sweep cells and the GUI: the
// identification fields of a QuantizeReport (method, policy, model, shape, wall time) and every
// metric of every slice. Callers add tags, note and cell hash to `ctx`.
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/policy/policy.h"
#include "core/replay/replay.h"
#include "storage/run_store.h"

namespace kvscope {

struct ReplayRecord {
  QuantizeReport identity;
  RunContext ctx;
};

ReplayRecord replay_record(const Policy& policy, const std::string& policy_name, const std::string& model_id,
                           const ModelConfig& cfg, const std::string& workload,
                           const std::vector<SliceMetrics>& metrics, double wall_seconds);

}  // namespace kvscope
