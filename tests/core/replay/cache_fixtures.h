#pragma once
// Shared by the tests of the quantized cache and its block hook (tests/core/replay): a small model
// shape, a policy from JSON text, and appending a slice of a K/V history to the cache.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/policy/policy.h"
#include "core/model/model.h"  // KvCache

namespace kvscope::test {

inline ModelConfig tiny_config(int layers = 2, int kv_heads = 2, int head_dim = 8) {
  ModelConfig c;
  c.num_layers = layers;
  c.num_heads = kv_heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.hidden_size = kv_heads * head_dim;
  c.max_position_embeddings = 4096;
  return c;
}

inline Policy policy_from(const std::string& text) { return parse_policy(nlohmann::json::parse(text), "test-policy"); }

// Appends tokens [first, first + n) of `hist` (k and v: [heads][T][D]) to every layer.
inline void append_range(KvCache& cache, const ModelConfig& c, const std::vector<float>& k, const std::vector<float>& v,
                         int T, int first, int n) {
  const int D = c.head_dim, H = c.num_kv_heads;
  std::vector<float> bk(static_cast<size_t>(H) * n * D), bv(bk.size());
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < n; ++t)
      for (int d = 0; d < D; ++d) {
        bk[(static_cast<size_t>(h) * n + t) * D + d] = k[(static_cast<size_t>(h) * T + first + t) * D + d];
        bv[(static_cast<size_t>(h) * n + t) * D + d] = v[(static_cast<size_t>(h) * T + first + t) * D + d];
      }
  for (int l = 0; l < c.num_layers; ++l) cache.append(l, bk.data(), bv.data(), n);
}

}  // namespace kvscope::test
