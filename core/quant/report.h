#pragma once
// What one quantization run produces: plain values shared by the CLI, the run store, the
// exports and the GUI views (no libtorch, no SQLite, no ImGui here).
#include <cstdint>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"

namespace kvscope {

// Tensor-level error of one (layer, KV head, kind) after quantize -> dequantize.
struct HeadMetrics {
  int layer = 0;
  int head = 0;       // KV head
  char kind = 'k';    // 'k' or 'v'
  double nmse = 0;    // sum (x - x^)^2 / sum x^2
  double cos = 1;     // cosine of the flattened head matrix
  double mse = 0;     // sum (x - x^)^2 / elements (kvmix's "norm_mse")
  double max_abs = 0; // max |x - x^|
  uint64_t bits = 0;      // exact stored size: codes + scales + zero points + fp16 tokens + side info
  uint64_t elements = 0;  // tokens * head_dim
  bool full_precision = false;  // the whole head was kept in fp16 (e.g. a kvmix outlier K head)
  double bits_per_element() const { return elements ? double(bits) / double(elements) : 0.0; }
};

// Attention-level error of one (layer, KV head): the G query heads of the group attend
// causally to the original vs the quantized K/V at the sampled query positions.
struct AttentionMetrics {
  int layer = 0;
  int head = 0;             // KV head
  double out_cos_mean = 1;  // mean over (query head, position) of cos(o, o^)
  double out_cos_min = 1;
  double out_nmse = 0;      // sum ||o - o^||^2 / sum ||o||^2
  double kl_mean = 0;       // mean KL(P || P^) of attention rows, nats
  double prob_cos_mean = 1; // mean cos(P_i, P^_i)
  double logit_rmse = 0;    // RMS of (l^ - l) over valid (query, key) pairs
  double logit_max_abs = 0;
};

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
