#pragma once
// Drill-down numbers for one (layer, KV head, kind): where the magnitude sits across channels
// (before and after RoPE) and which tokens carry the quantization error. Feeds the GUI's head
// detail panel; plain values, no ImGui.
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"

namespace kvscope {

struct HeadProfile {
  int layer = 0, head = 0;
  char kind = 'k';
  std::vector<float> channel_max_abs;           // [head_dim] max over tokens of |x|
  std::vector<float> channel_max_abs_pre_rope;  // [head_dim] same before RoPE; empty if not in the dump (or V)
  std::vector<float> channel_max_abs_rotated;   // [head_dim] same after the policy's rotation; empty without one
  std::vector<float> token_error;               // [tokens] ||x_t - x^_t||^2 / ||x_t||^2; empty without x^
  std::vector<int> outlier_channels;            // max|x| >= ratio * median channel max, largest first
};

// `dequantized` is the head's [tokens, head_dim] reconstruction (or nullptr); `rotation` the policy's
// rotation stage (or nullptr): when it applies to `kind`, channel_max_abs_rotated is the channel
// magnitudes of the rotated head the method quantizes. Throws Error when layer/head/kind are out of
// range (or the rotation does not fit head_dim).
HeadProfile profile_head(const KvDump& dump, int layer, int head, char kind, const float* dequantized,
                         double outlier_ratio = 4.0, const RotationSpec* rotation = nullptr);

// Channels whose value is at least `ratio` times the median value, sorted by value, largest first.
std::vector<int> outlier_channels(const std::vector<float>& channel_max_abs, double ratio);

}  // namespace kvscope
