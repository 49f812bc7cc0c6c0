#pragma once
// Live policy tuning helpers for the GUI: per-head fp16 toggles (as policy overrides) and the
// instant size estimate shown while a slider moves, before the background quantization reports
// the exact bit count.
#include <utility>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"

namespace kvscope::gui {

// True when an override of `p` keeps exactly this (layer, KV head, kind) in fp16.
bool head_kept_fp16(const Policy& p, int layer, int head, char kind);
// Adds the single-head fp16 override, or removes it when present. Goes through the policy JSON
// so the result is exactly what loading the saved policy file would give.
void toggle_head_fp16(Policy& p, int layer, int head, char kind);
// (layer, head) pairs of `kind` that single-head fp16 overrides keep in full precision.
std::vector<std::pair<int, int>> fp16_heads(const Policy& p, char kind);

// Storage estimate from the policy alone: codes + per-group scale (and zero point) + fp16
// residual/sink tokens + heads kept in fp16 by overrides or by the List/Count outlier rules.
// The data-dependent rules (MSE over median, MSE share) count as quantized until the background
// quantization reports the exact size.
struct CostEstimate {
  double bits_per_element = 0;
  double bytes_per_token = 0;  // K and V, all layers and KV heads
};
CostEstimate estimate_cost(const Policy& p, const KvDump& dump);
// Bits per element of one quantized head matrix [tokens, head_dim], before fp16 tokens.
double tensor_bits_per_element(const TensorQuant& q, int tokens, int head_dim);

}  // namespace kvscope::gui
