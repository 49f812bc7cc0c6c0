#pragma once
// How many query positions attention metrics sample by default: bounded by work, from the dump's
// shape only (never a timer), so a stored result is reproducible.
#include <vector>

namespace kvscope {

// Multiply-adds of measuring `positions` of a dump: Q K^T and P V against the original and the
// quantized cache, each query position p seeing keys 0..p: layers * q_heads * head_dim * 4 * sum(p + 1).
double attention_products(int layers, int q_heads, int head_dim, const std::vector<int>& positions);

// The default query sample of `kvscope quantize` (--attn-queries auto): kDefaultAttnQueries
// positions spread by sample_positions, or fewer when measuring them would take more than
// kAttnProductBudget multiply-adds (the most that fit, at least kMinAutoAttnQueries). Every dump up
// to the 4096-token demo's shape (24 layers, 14 query heads, head_dim 64: 4.5e10) keeps 256; a
// Llama-3-8B-shaped 8192-token dump (5.5e11 at 256) gets 23.
inline constexpr int kDefaultAttnQueries = 256, kMinAutoAttnQueries = 16;
inline constexpr double kAttnProductBudget = 5e10;
int auto_attn_queries(int layers, int q_heads, int head_dim, int tokens);

}  // namespace kvscope
