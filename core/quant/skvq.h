#pragma once
// SKVQ (ALGORITHMS.md §3): per layer, each token's vector of all KV heads concatenated
// (C = kv_heads * head_dim channels) is quantized per token in groups of channels; channels are
// first reordered so each group holds channels of similar range (k-means on the per-channel
// (min, max) of calibration tokens, n_cluster = C / g clusters, so groups have variable size).
// Clipped asymmetric quantization (lo = a*min, hi = a*max, s = max((hi - lo)/qmax, 1e-5)), fp16
// scale and zero point; the first S (sink) and last W (window) tokens stay fp16. With pre-RoPE
// caching the keys are quantized before RoPE, which is what makes any reordering legal.
#include <cstdint>
#include <vector>

namespace kvscope {

struct SkvqReorder {
  std::vector<int> perm;    // perm[i] = original channel placed at position i
  std::vector<int> bounds;  // group boundaries in permuted order, bounds.front() = 0, back() = C
};

// k-means (k-means++ init, n_init restarts, Lloyd) on the points (min_c, max_c) of the C channels
// of calib [T, C]; deterministic for a given seed. Clusters are ordered by mean range (max - min).
SkvqReorder skvq_calibrate_reorder(const float* calib, int T, int C, int group_size, int n_init = 10,
                                   uint64_t seed = 0);
SkvqReorder skvq_identity_groups(int C, int group_size);  // no reordering: groups of g consecutive channels

struct SkvqSpec {
  int bits = 2;            // qmax = 2^bits - 1
  double clip_ratio = 0.92;
  int sinks = 5, window = 128;
};

struct SkvqResult {
  uint64_t bits = 0;         // codes + fp16 scale/zero per group per quantized token + fp16 tokens
  uint64_t static_bits = 0;  // reorder metadata: 16 * (C + n_groups + 1)
};

// Quantizes x [T, C] (row-major) and writes the reconstruction to out [T, C].
SkvqResult skvq_quantize(const float* x, int T, int C, const SkvqReorder& groups, const SkvqSpec& spec, float* out,
                         bool count_reorder_metadata);

}  // namespace kvscope
