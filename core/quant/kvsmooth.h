#pragma once
// KVSmooth (msModelSlim, ALGORITHMS.md §4): per-channel smoothing scales from the observed max |K|
// of calibration tokens, RoPE pairs sharing the larger scale, K' = K / s and Q' = Q * s so that
// Q'K'^T = QK^T while K' has a small dynamic range. Scaling commutes with RoPE when both members
// of a pair share the scale, so it can be applied to post-RoPE keys of a dump directly.
#include <string>
#include <vector>

#include "core/policy/policy.h"  // SmoothOptions

namespace kvscope {

// Scales s[h * head_dim + c] for one layer from keys [kv_heads, tokens, head_dim] (rotate-half pairs
// (j, j + D/2), or (2j, 2j + 1) when interleaved); clamped to >= 1e-5.
std::vector<float> kvsmooth_scales(const float* k, int kv_heads, int tokens, int head_dim, double factor,
                                   bool interleaved = false);

// The same from precomputed per-channel max |K| [kv_heads * head_dim]. shared_over_heads (Qwen3's
// k_norm/q_norm weights are [head_dim] for all heads): max over heads first, returns [head_dim].
std::vector<float> kvsmooth_scales_from_max(const float* max_abs, int kv_heads, int head_dim, double factor,
                                            bool interleaved, bool shared_over_heads);

// Attention module names are "model.layers.{L}.self_attn"; patterns use * and ? (glob).
bool glob_match(const std::string& pattern, const std::string& name);
// Layers smoothed under include/exclude; Error when a pattern matches no layer.
std::vector<bool> kvsmooth_layers(const SmoothOptions& spec, int layers, const std::string& where);

}  // namespace kvscope
