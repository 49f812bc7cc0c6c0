#include "storage/replay_record.h"

#include <nlohmann/json.hpp>

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
  for (const auto& m : metrics) {
    for (const auto& [k, v] : m.fields()) r.ctx.replay_metrics.push_back({m.slice, k, v});
    for (size_t i = 0; i < m.item_results.size(); ++i) {
      const ItemResult& it = m.item_results[i];
      ReplayItemRow row{m.slice, static_cast<int>(i + 1), it.prompt_tokens, it.steps, it.score, it.score_ref,
                        it.kld_mean, it.kld_p99, it.kld_max, it.dp_mean, it.same_top, it.ppl, it.ppl_ref};
      row.chat_text = it.chat_text;
      if (!it.prompt_ids.empty()) row.token_ids = nlohmann::json(it.prompt_ids).dump();
      row.blocks = block_choices_json(it.blocks, it.greedy_blocks);
      r.ctx.replay_items.push_back(std::move(row));
    }
    const size_t nq = m.kld_quantiles.size();
    for (size_t k = 0; k < nq; ++k)
      r.ctx.kld_quantiles.push_back({m.slice, nq > 1 ? static_cast<double>(k) / static_cast<double>(nq - 1) : 0.0, m.kld_quantiles[k]});
  }
  return r;
}

}  // namespace kvscope
