#pragma once
// What one quantization run produces: plain values shared by the CLI, the run store, the
// exports and the GUI views (no libtorch, no SQLite, no ImGui here). The metric types are
// core/metrics/'s (HeadMetrics, AttentionMetrics), included here for the report's users.
#include <cstdint>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"

namespace kvscope {

struct QuantizeReport {
  std::string method;        // e.g. "kivi"
  std::string policy_name;   // preset name or policy file
  std::string policy_json;   // canonical JSON of the policy that ran
  std::string dump_path;
  DumpShape shape;
  std::string model_id;

  // Aggregates sum bits and errors over all heads (never average per-head ratios).
  double bits_per_element = 0;
  double k_bits_per_element = 0;
  double v_bits_per_element = 0;
  double bytes_per_token = 0;   // per-token cost (what grows with the context), kvmix's table metric
  double static_bytes = 0;      // per-cache constants (global scales, permutations), not per token
  double fp16_bytes_per_token = 0;  // the unquantized cache, for the compression ratio
  double fixed_width_bits_per_element = 0;  // entropy-coded methods (WaterSIC): the same codes packed at fixed width
  double calibration_seconds = 0;  // calibration work (WaterSIC search, SKVQ k-means, KVSmooth maxima), summed over items
  double k_nmse = 0, v_nmse = 0;
  double k_cos = 1, v_cos = 1;
  double attn_cos_mean = 1, attn_cos_min = 1, attn_nmse = 0, attn_kl_mean = 0;
  int attn_queries = 0;         // sampled query positions per head (0 = no attention metrics)

  std::vector<HeadMetrics> per_head;          // layer-major, then head, then k before v
  std::vector<AttentionMetrics> attention;    // layer-major, then KV head
  double wall_seconds = 0;
};

}  // namespace kvscope
