#pragma once
// Attention-level error of one (layer, KV head): its G query heads attend causally (query at
// position p sees keys 0..p, scale 1/sqrt(D), softmax with max subtraction) to the original and
// to the quantized K/V; compared at sampled query positions (ALGORITHMS.md §7).
#include <vector>

namespace kvscope {

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

// n positions spread evenly over [0, tokens) including the first and the last; all positions
// when n <= 0 or n >= tokens.
std::vector<int> sample_positions(int tokens, int n);

struct AttentionSums {
  double out_err2 = 0, out_ref2 = 0;  // for output NMSE
  double out_cos_sum = 0, out_cos_min = 1;
  double kl_sum = 0, prob_cos_sum = 0;
  double logit_err2 = 0, logit_max_abs = 0;
  double logit_count = 0;
  double rows = 0;
  void merge(const AttentionSums& o);
  AttentionMetrics metrics(int layer, int head) const;
};

// q: G pointers to [T, D] query matrices (post-RoPE); k, v, kq, vq: [T, D] original and
// dequantized keys/values of the KV head. Single-threaded (callers parallelize over heads; see
// ScopedBlasThreads for the BLAS side).
AttentionSums attention_error(const std::vector<const float*>& q, const float* k, const float* v, const float* kq,
                              const float* vq, int T, int D, const std::vector<int>& positions);

// Scalar double-precision reference of the same quantities, for tests.
AttentionSums attention_error_reference(const std::vector<const float*>& q, const float* k, const float* v,
                                        const float* kq, const float* vq, int T, int D,
                                        const std::vector<int>& positions);

}  // namespace kvscope
