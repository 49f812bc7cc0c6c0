#include "storage/replay_record.h"

namespace kvscope {

ReplayRecord replay_record(const Policy& policy, const std::string& policy_name, const std::string& model_id,
                           const ModelConfig& cfg, const std::string& workload,
                           const std::vector<SliceMetrics>& metrics, double wall_seconds) {
  ReplayRecord r;
  r.identity.method = method_name(policy.method);
  r.identity.policy_name = policy_name;
  r.identity.policy_json = canonical_policy_json(policy);
  r.identity.model_id = model_id;
  r.identity.shape.layers = cfg.num_layers;
  r.identity.shape.kv_heads = cfg.num_kv_heads;
  r.identity.shape.q_heads = cfg.num_heads;
  r.identity.shape.head_dim = cfg.head_dim;
  r.identity.wall_seconds = wall_seconds;
  r.ctx.workload = workload;
  for (const auto& m : metrics)
    for (const auto& [k, v] : m.fields()) r.ctx.replay_metrics.push_back({m.slice, k, v});
  return r;
}

}  // namespace kvscope
