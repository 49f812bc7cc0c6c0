#pragma once
// Resolves a policy against a dump into one plan per (layer, KV head, kind): the quantizer
// settings after overrides and outlier selection, and how many leading (sink) and trailing
// (residual window) tokens stay in fp16.
#include <utility>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"

namespace kvscope {

struct HeadPlan {
  int layer = 0, head = 0;
  char kind = 'k';
  TensorQuant quant;
  int fp_head = 0, fp_tail = 0;
};

// Layer-major, then head, K before V. Throws Error naming the JSON path when the policy refers
// to layers/heads the dump does not have.
// k_mse: strat1_k_mse of the dump when already computed (the streamed path reads the dump's
// layers itself; `dump` then needs only its shape and metadata).
std::vector<HeadPlan> plan_heads(const KvDump& dump, const Policy& policy, const std::vector<double>* k_mse = nullptr);

// Full-precision token counts for T cached tokens (ALGORITHMS.md §2.2 for KIVI); `layer` picks
// residual_layers' entry (-1: the policy's residual).
int residual_tokens(const Policy& p, char kind, int T, int layer = -1);

// kvmix strat1 K MSE of every (layer, KV head) (symmetric int8, one scale per head), the
// statistic the outlier-head rules rank by (§6.2). Index: layer * kv_heads + head.
std::vector<double> strat1_k_mse(const KvDump& dump);
// The quantizer that statistic uses (symmetric int8 with an inverse scale, one group per head).
TensorQuant strat1_spec();

// The ranked rules (mse_over_median, mse_share, count) on strat1 K MSEs indexed layer * kv_heads + head;
// shared by dumps and replay's calibration. Sorted (layer, head) pairs.
std::vector<std::pair<int, int>> rank_outlier_heads(const std::vector<double>& mse, int kv_heads, const OutlierSelect& rule);

// The (layer, head) pairs the policy's outlier rule keeps in fp16, sorted.
std::vector<std::pair<int, int>> select_outlier_heads(const KvDump& dump, const OutlierSelect& rule);

}  // namespace kvscope
