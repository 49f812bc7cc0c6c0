// The attention kernels of the forward, AVX2+FMA (callers fall back to plain loops / sgemm).
// Prefill: fused causal attention (flash-attention style): per head, tiles of kRows query rows
// walk panels of kKeys keys; each panel's scores stay in registers / L1 (QK^T micro-kernel),
// go through an online softmax (running max and sum per row, earlier output rescaled when the
// max grows) and are multiplied into the output rows at once (PV micro-kernel). No score matrix
// is written, no BLAS call per block: with head_dim 32 those small GEMMs and their beta pass
// cost more than the products themselves.
// Decode: one query row against the cache, 8 keys per step of the QK^T loop (one transposing
// horizontal add for 8 scores), PV with two sets of accumulators over 32-column strips.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/model/forward_ops.h"
#include "core/model/simd_exp.h"
#include "core/tensor/worker_pool.h"

namespace kvscope {

namespace {

constexpr int kRows = 6;   // query rows per tile: 6 x 2 accumulators + 2 key vectors + 1 broadcast
constexpr int kKeys = 16;  // keys per panel: two 8-float vectors

bool have_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

// K^T of one KV head in panels of kKeys keys: panel p is [d][kKeys]; keys at or past `total` are 0.
void pack_keys(const float* K, int64_t total, int d, float* kt) {
  const int64_t panels = (total + kKeys - 1) / kKeys;
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = kt + p * d * kKeys;
    for (int j = 0; j < kKeys; ++j) {
      const int64_t t = p * kKeys + j;
      const float* src = K + t * d;
      for (int c = 0; c < d; ++c) dst[c * kKeys + j] = t < total ? src[c] : 0.f;
    }
  }
}

// S[r][0, kKeys) = Q[r] . keys of the panel, for R rows of Q (row stride d).
template <int R>
__attribute__((target("avx2,fma"))) inline void qk_panel(const float* Q, int d, const float* kt, float* S) {
  __m256 a[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
  for (int c = 0; c < d; ++c) {
    const __m256 k0 = _mm256_loadu_ps(kt + c * kKeys), k1 = _mm256_loadu_ps(kt + c * kKeys + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 qb = _mm256_broadcast_ss(Q + r * d + c);
      a[r][0] = _mm256_fmadd_ps(qb, k0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(qb, k1, a[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(S + r * kKeys, a[r][0]);
    _mm256_storeu_ps(S + r * kKeys + 8, a[r][1]);
  }
}

// O[r][0, d) += sum_j P[r][j] V[j] for the panel's first `keys` keys (V row stride d; d % 8 == 0).
template <int R>
__attribute__((target("avx2,fma"))) inline void pv_panel(const float* P, const float* V, int keys, int d, float* O) {
  int c = 0;
  for (; c + 16 <= d; c += 16) {
    __m256 a[R][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      a[r][0] = _mm256_loadu_ps(O + r * d + c);
      a[r][1] = _mm256_loadu_ps(O + r * d + c + 8);
    }
    for (int j = 0; j < keys; ++j) {
      const __m256 v0 = _mm256_loadu_ps(V + j * d + c), v1 = _mm256_loadu_ps(V + j * d + c + 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 pb = _mm256_broadcast_ss(P + r * kKeys + j);
        a[r][0] = _mm256_fmadd_ps(pb, v0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(pb, v1, a[r][1]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(O + r * d + c, a[r][0]);
      _mm256_storeu_ps(O + r * d + c + 8, a[r][1]);
    }
  }
  if (c < d) {  // d % 16 == 8: the last 8 columns
    __m256 a[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a[r] = _mm256_loadu_ps(O + r * d + c);
    for (int j = 0; j < keys; ++j) {
      const __m256 v0 = _mm256_loadu_ps(V + j * d + c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(P + r * kKeys + j), v0, a[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(O + r * d + c, a[r]);
  }
}

__attribute__((target("avx2"))) inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}


// Sums of 8 vectors: lane j of the result = sum of the lanes of a[j].
__attribute__((target("avx2"))) inline __m256 hsum8x8(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// sc[t] = (q . K[t]) * scale for t in [lo, hi).
__attribute__((target("avx2,fma"))) void row_scores(const float* q, const float* K, int64_t lo, int64_t hi, int d,
                                                    float scale, float* sc) {
  const __m256 vs = _mm256_set1_ps(scale);
  int64_t t = lo;
  for (; t + 8 <= hi; t += 8) {
    __m256 a[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_ps();
    for (int c = 0; c < d; c += 8) {
      const __m256 qc = _mm256_loadu_ps(q + c);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) a[j] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(K + (t + j) * d + c), a[j]);
    }
    _mm256_storeu_ps(sc + t, _mm256_mul_ps(hsum8x8(a), vs));
  }
  for (; t < hi; ++t) {
    __m256 a = _mm256_setzero_ps();
    for (int c = 0; c < d; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(K + t * d + c), a);
    sc[t] = hsum8(a) * scale;
  }
}

// p[t] = exp(sc[t] - max) in place for t in [lo, hi); returns their sum.
__attribute__((target("avx2,fma"))) float row_softmax_unnormalized(float* sc, int64_t lo, int64_t hi) {
  __m256 vmx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t t = lo;
  for (; t + 8 <= hi; t += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(sc + t));
  float mx = hmax8(vmx);
  for (; t < hi; ++t) mx = std::max(mx, sc[t]);
  const __m256 vm = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (t = lo; t + 8 <= hi; t += 8) {
    const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + t), vm));
    _mm256_storeu_ps(sc + t, p);
    acc = _mm256_add_ps(acc, p);
  }
  float sum = hsum8(acc);
  for (; t < hi; ++t) sum += (sc[t] = std::exp(sc[t] - mx));
  return sum;
}

// out[c0, c0 + 8 W) = inv * sum_t p[t] V[t][c0, ..): W vectors, keys alternating between two
// accumulator sets (FMA latency).
template <int W>
__attribute__((target("avx2,fma"))) inline void row_pv_strip(const float* p, const float* V, int64_t lo, int64_t hi,
                                                             int d, int c0, float inv, float* out) {
  __m256 a[W], b[W];
#pragma GCC unroll 4
  for (int w = 0; w < W; ++w) a[w] = b[w] = _mm256_setzero_ps();
  int64_t t = lo;
  for (; t + 2 <= hi; t += 2) {
    const __m256 p0 = _mm256_broadcast_ss(p + t), p1 = _mm256_broadcast_ss(p + t + 1);
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) {
      a[w] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(V + t * d + c0 + 8 * w), a[w]);
      b[w] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(V + (t + 1) * d + c0 + 8 * w), b[w]);
    }
  }
  if (t < hi) {
    const __m256 p0 = _mm256_broadcast_ss(p + t);
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) a[w] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(V + t * d + c0 + 8 * w), a[w]);
  }
  const __m256 vi = _mm256_set1_ps(inv);
#pragma GCC unroll 4
  for (int w = 0; w < W; ++w) _mm256_storeu_ps(out + c0 + 8 * w, _mm256_mul_ps(_mm256_add_ps(a[w], b[w]), vi));
}

struct Tile {
  int64_t first_pos = 0;  // position of the tile's first query row
  int window = 0;         // sliding window (0 = full causal)
  float scale = 1.f;
  int64_t lo(int64_t pos) const { return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0; }
};

// Online softmax of one panel for R rows: S (raw scores) -> P (unnormalized probabilities), with
// the rows' running max m and sum l updated and their output rows O rescaled when m grows.
template <int R>
__attribute__((target("avx2,fma"))) inline void softmax_panel(const Tile& tt, int64_t kb, bool mask, const float* S,
                                                              float* P, float* m, double* l, float* O, int d) {
  const __m256 vs = _mm256_set1_ps(tt.scale), ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 iota0 = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), iota1 = _mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15);
  const __m256 key0 = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(kb)), iota0);
  const __m256 key1 = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(kb)), iota1);
  for (int r = 0; r < R; ++r) {
    __m256 s0 = _mm256_loadu_ps(S + r * kKeys), s1 = _mm256_loadu_ps(S + r * kKeys + 8);  // unscaled
    if (mask) {  // keys outside [lo(pos), pos] of this row
      const int64_t pos = tt.first_pos + r;
      const __m256 hi = _mm256_set1_ps(static_cast<float>(pos)), lo = _mm256_set1_ps(static_cast<float>(tt.lo(pos)));
      s0 = _mm256_blendv_ps(ninf, s0, _mm256_and_ps(_mm256_cmp_ps(key0, hi, _CMP_LE_OQ), _mm256_cmp_ps(key0, lo, _CMP_GE_OQ)));
      s1 = _mm256_blendv_ps(ninf, s1, _mm256_and_ps(_mm256_cmp_ps(key1, hi, _CMP_LE_OQ), _mm256_cmp_ps(key1, lo, _CMP_GE_OQ)));
    }
    const float mnew = std::max(m[r], hmax8(_mm256_max_ps(s0, s1)) * tt.scale);  // scale > 0
    if (mnew == -std::numeric_limits<float>::infinity()) {  // nothing visible to this row yet
      _mm256_storeu_ps(P + r * kKeys, _mm256_setzero_ps());
      _mm256_storeu_ps(P + r * kKeys + 8, _mm256_setzero_ps());
      continue;
    }
    const __m256 vm = _mm256_set1_ps(mnew);
    // exp(s scale - max) with one rounding in the argument, as the sgemm path's softmax.
    const __m256 p0 = exp8(_mm256_fmsub_ps(s0, vs, vm)), p1 = exp8(_mm256_fmsub_ps(s1, vs, vm));
    _mm256_storeu_ps(P + r * kKeys, p0);
    _mm256_storeu_ps(P + r * kKeys + 8, p1);
    if (mnew != m[r]) {
      const float alpha = std::exp(m[r] - mnew);  // 0 for the first visible panel
      const __m256 va = _mm256_set1_ps(alpha);
      for (int c = 0; c < d; c += 8) _mm256_storeu_ps(O + r * d + c, _mm256_mul_ps(_mm256_loadu_ps(O + r * d + c), va));
      l[r] *= alpha;
      m[r] = mnew;
    }
    l[r] += hsum8(_mm256_add_ps(p0, p1));
  }
}

// One tile of R query rows (Q rows, positions tt.first_pos ..) against packed keys kt and values V
// of their KV head; writes the R output rows (row stride ldo).
template <int R>
__attribute__((target("avx2,fma"))) void attend_tile(const Tile& tt, const float* Q, const float* kt, const float* V,
                                                     int d, float* out, int64_t ldo) {
  alignas(32) float S[R * kKeys], P[R * kKeys];
  float m[R];
  double l[R];  // sums over up to all keys: double, as the softmax of the decode and sgemm paths
  thread_local std::vector<float> obuf;
  if (obuf.size() < static_cast<size_t>(R * d)) obuf.resize(static_cast<size_t>(kRows * d));
  float* O = obuf.data();
  std::fill(O, O + R * d, 0.f);
  std::fill(m, m + R, -std::numeric_limits<float>::infinity());
  std::fill(l, l + R, 0.0);
  const int64_t last_pos = tt.first_pos + R - 1;
  const int64_t first_lo = tt.lo(tt.first_pos), last_lo = tt.lo(last_pos);
  for (int64_t kb = first_lo / kKeys * kKeys; kb <= last_pos; kb += kKeys) {
    const bool mask = kb + kKeys - 1 > tt.first_pos || kb < last_lo;
    qk_panel<R>(Q, d, kt + kb * d, S);
    softmax_panel<R>(tt, kb, mask, S, P, m, l, O, d);
    pv_panel<R>(P, V + kb * d, static_cast<int>(std::min<int64_t>(kKeys, last_pos + 1 - kb)), d, O);
  }
  for (int r = 0; r < R; ++r) {
    const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / l[r]));
    for (int c = 0; c < d; c += 8) _mm256_storeu_ps(out + r * ldo + c, _mm256_mul_ps(_mm256_loadu_ps(O + r * d + c), inv));
  }
}

void attend_rows(int rows, const Tile& tt, const float* Q, const float* kt, const float* V, int d, float* out,
                 int64_t ldo) {
  switch (rows) {
    case 6: return attend_tile<6>(tt, Q, kt, V, d, out, ldo);
    case 5: return attend_tile<5>(tt, Q, kt, V, d, out, ldo);
    case 4: return attend_tile<4>(tt, Q, kt, V, d, out, ldo);
    case 3: return attend_tile<3>(tt, Q, kt, V, d, out, ldo);
    case 2: return attend_tile<2>(tt, Q, kt, V, d, out, ldo);
    default: return attend_tile<1>(tt, Q, kt, V, d, out, ldo);
  }
}
static_assert(kRows == 6, "attend_rows dispatches 1..6 rows");

}  // namespace

bool attend_row_avx2(const float* q, const float* K, const float* V, int64_t lo, int64_t hi, int d, float scale,
                     float* scores, float* out) {
  if (!have_avx2_fma() || d % 8 != 0 || d <= 0 || hi <= lo) return false;
  row_scores(q, K, lo, hi, d, scale, scores);
  const float inv = 1.f / row_softmax_unnormalized(scores, lo, hi);
  int c = 0;
  for (; c + 32 <= d; c += 32) row_pv_strip<4>(scores, V, lo, hi, d, c, inv, out);
  for (; c < d; c += 8) row_pv_strip<1>(scores, V, lo, hi, d, c, inv, out);
  return true;
}

bool causal_attention_fused(const float* q, const float* k, const float* v, const AttentionShape& s, float* out) {
  const int H = s.heads, d = s.head_dim, n = s.n, G = s.heads / s.kv_heads;
  if (!have_avx2_fma() || d % 8 != 0 || d <= 0) return false;
  const int64_t total = s.start + n, ldo = static_cast<int64_t>(H) * d;
  const int64_t tiles = (n + kRows - 1) / kRows;
  Tile base;
  base.window = s.sliding_window;
  base.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  // Parts: per head, `per_head` sets of its tiles dealt round-robin (each set sees early, cheap
  // and late, expensive rows); a part packs its head's keys once. The threads claim parts as they go.
  const int threads = kernel_threads();
  const int per_head = static_cast<int>(std::clamp<int64_t>((2 * threads + H - 1) / H, 1, tiles));
  run_parts(threads <= 1 ? 1 : H * per_head, [&](int part, int n_parts) {
    std::vector<float> kt(static_cast<size_t>((total + kKeys - 1) / kKeys) * kKeys * d);
    const int h_lo = n_parts == 1 ? 0 : part / per_head, h_hi = n_parts == 1 ? H : h_lo + 1;
    const int sets = n_parts == 1 ? 1 : per_head, set = n_parts == 1 ? 0 : part % per_head;
    int packed = -1;
    for (int h = h_lo; h < h_hi; ++h) {
      const int g = h / G;
      if (g != packed) {
        pack_keys(k + g * s.kv_head_stride, total, d, kt.data());
        packed = g;
      }
      for (int64_t tile = set; tile < tiles; tile += sets) {
        const int i0 = static_cast<int>(tile) * kRows;
        Tile tt = base;
        tt.first_pos = s.start + i0;
        attend_rows(std::min(kRows, n - i0), tt, q + (static_cast<int64_t>(h) * n + i0) * d, kt.data(),
                    v + g * s.kv_head_stride, d, out + static_cast<int64_t>(i0) * ldo + static_cast<int64_t>(h) * d, ldo);
      }
    }
  });
  return true;
}

}  // namespace kvscope
