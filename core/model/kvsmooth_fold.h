#pragma once
// KVSmooth on a real checkpoint (ALGORITHMS.md §4, msModelSlim's kv_smooth processor):
// calibrate the per-channel max |K| (post-RoPE, what the cache stores) on calibration tokens,
// derive scales shared by each RoPE pair, and fold them into the weights before RoPE so that
// K' = K / s and Q' = Q * s (Q'K'^T = QK^T):
//   state-rope-linear (Llama, Mistral, Qwen2): rows of k_proj (and its bias) / s, rows of q_proj
//                                              (and bias) of the G query heads of each KV head * s;
//   state-rope-norm   (Qwen3): k_norm / s and q_norm * s, with one scale per channel shared by all
//                              heads (max over heads first).
// The folded checkpoint is written in the original dtype (fp16/bf16 rounding makes the identity
// approximate there; the tests measure it).
#include <span>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/policy/policy.h"  // SmoothOptions

namespace kvscope {

struct KvSmoothFold {
  bool norm_fusion = false;                // state-rope-norm (Qwen3) vs state-rope-linear
  std::vector<std::vector<float>> max_k;   // per layer [kv_heads * head_dim]: calibration max |K|
  std::vector<std::vector<float>> scales;  // per layer: [kv_heads * head_dim] (linear) or [head_dim]
                                           //            (norm); empty = layer excluded
};

// Runs the calibration tokens through the model (chunked prefill) and computes the scales.
// Errors: a pattern that matches no attention module, a calibration longer than the model supports.
KvSmoothFold kvsmooth_calibrate(const Model& model, std::span<const int32_t> calib_ids, const SmoothOptions& opts);

// Writes out_dir/config.json (copied), the tokenizer files, and out_dir/model.safetensors with
// every tensor of src_dir, q/k projections (or norms) folded. Refuses to overwrite a model.
void kvsmooth_write_checkpoint(const std::string& src_dir, const ModelConfig& cfg, const KvSmoothFold& fold,
                               const std::string& out_dir);

}  // namespace kvscope
