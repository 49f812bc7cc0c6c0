#pragma once
// The non-GEMM steps of the forward, as plain loops over contiguous f32 memory (the model's own
// kernels: no libtorch op chain, no allocation per op). Shapes are given next to each argument.
#include <cstdint>

namespace kvscope {

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for `rows` rows of `dim` (x and y may alias).
void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* y);

// rotate_half RoPE in place on x [heads, n, head_dim]; cos/sin [n, head_dim / 2] per position.
// x[i] += y[i] for n floats (split over the cores when large).
void add_rows(float* x, const float* y, int64_t n);

void rope_heads(float* x, int heads, int n, int head_dim, const float* cos, const float* sin);

// out[i] = silu(gate[i]) * up[i] for a [rows, inter] gate and up with row stride `ld`; out [rows, inter].
void silu_mul(const float* gate, const float* up, int64_t ld, int64_t rows, int64_t inter, float* out);

struct AttentionShape {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int n = 0;                // new query positions, at start .. start + n - 1
  int start = 0;            // positions already in the cache before this call
  int sliding_window = 0;   // 0 = full causal
  int64_t kv_head_stride = 0;
};

// Causal softmax attention: q [heads, n, d] (post-RoPE), keys/values [kv_heads, start + n, d] with
// head stride kv_head_stride; writes out [n, heads * d]. Query head j reads KV head j / G (GQA).
// One position: hand-written loops over heads; several: causal_attention_fused, or (no AVX2, odd
// head_dim) per head, blocks of query rows run through sgemm against the keys they can see.
void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& s, float* out);

// The decode path of causal_attention for one query row of one head when the CPU has AVX2+FMA and
// head_dim % 8 == 0 (else false, nothing written): out[0, d) = softmax(scale q.K[t]) V over keys
// t in [lo, hi) (K, V rows of d floats); scores is scratch of hi floats.
bool attend_row_avx2(const float* q, const float* K, const float* V, int64_t lo, int64_t hi, int d, float scale,
                     float* scores, float* out);

// The prefill path of causal_attention when the CPU has AVX2+FMA and head_dim % 8 == 0 (else it
// returns false and writes nothing): fused tiles of 6 queries x 16 keys with an online softmax
// (core/model/attention_avx2.cpp), (head, tile) units spread over the cores.
bool causal_attention_fused(const float* q, const float* k, const float* v, const AttentionShape& s, float* out);

// exp of n floats in place (vectorized Cephes polynomial, rel. error < 2e-7).
void exp_inplace(float* x, int64_t n);

}  // namespace kvscope
