#include "core/model/forward_ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/model/simd_exp.h"
#include "core/tensor/compute_threads.h"
#include "core/tensor/matmul.h"
#include "core/tensor/worker_pool.h"

namespace kvscope {

namespace {

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

__attribute__((target("avx2,fma"))) void exp_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = std::exp(x[i]);
}

// x[i] = exp(x[i] * scale - mx) for i < n, returns their sum (one pass over the row).
__attribute__((target("avx2,fma"))) double exp_shifted_sum_avx2(float* x, int64_t n, float scale, float mx) {
  const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 y = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(x + i), vs, vm));
    _mm256_storeu_ps(x + i, y);
    acc = _mm256_add_ps(acc, y);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += (x[i] = std::exp(x[i] * scale - mx));
  return sum;
}

__attribute__((target("avx2"))) float max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float r = lanes[0];
  for (float l : lanes) r = std::max(r, l);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// Softmax of row[lo, hi) in place; entries outside are set to 0. scale (> 0) applied to the logits.
void softmax_range(float* row, int64_t len, int64_t lo, int64_t hi, float scale) {
  double sum = 0;
  if (have_avx2()) {
    sum = exp_shifted_sum_avx2(row + lo, hi - lo, scale, max_avx2(row + lo, hi - lo) * scale);
  } else {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t t = lo; t < hi; ++t) mx = std::max(mx, row[t] * scale);
    for (int64_t t = lo; t < hi; ++t) sum += (row[t] = std::exp(row[t] * scale - mx));
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t t = lo; t < hi; ++t) row[t] *= inv;
  std::fill(row, row + lo, 0.f);
  std::fill(row + hi, row + len, 0.f);
}

}  // namespace

void exp_inplace(float* x, int64_t n) {
  if (have_avx2()) return exp_avx2(x, n);
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

// Threads for an element-wise pass over `elems` floats: one below ~32k (a dispatch costs more).
int elementwise_parts(int64_t elems, int64_t rows) {
  return elems < (int64_t{1} << 15) || rows < 2 ? 1 : static_cast<int>(std::min<int64_t>(rows, kernel_threads()));
}

void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* y) {
  // Rows split over the cores; each row's sum in the same order as one thread (bit-identical).
  run_parts(elementwise_parts(rows * dim, rows), [&](int part, int parts) {
    long rb, re;
    part_range(static_cast<long>(rows), part, parts, &rb, &re);
    for (int64_t r = rb; r < re; ++r) {
      const float* a = x + r * dim;
      float* b = y + r * dim;
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(a[i]) * a[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
      for (int64_t i = 0; i < dim; ++i) b[i] = a[i] * inv * w[i];
    }
  });
}

void rope_heads(float* x, int heads, int n, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  const int64_t rows = int64_t{heads} * n;
  run_parts(elementwise_parts(rows * head_dim, rows), [&](int part, int parts) {
    long rb, re;
    part_range(static_cast<long>(rows), part, parts, &rb, &re);
    for (int64_t hr = rb; hr < re; ++hr) {
      const int64_t t = hr % n;
      float* r = x + hr * head_dim;
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (int i = 0; i < half; ++i) {
        const float x0 = r[i], x1 = r[i + half];
        r[i] = x0 * c[i] - x1 * s[i];
        r[i + half] = x1 * c[i] + x0 * s[i];
      }
    }
  });
}

void add_rows(float* x, const float* y, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  run_parts(elementwise_parts(n, blocks), [&](int part, int parts) {
    long b, e;
    part_range(static_cast<long>(blocks), part, parts, &b, &e);
    for (int64_t i = b * kBlock, end = std::min(n, e * kBlock); i < end; ++i) x[i] += y[i];
  });
}

void silu_mul(const float* gate, const float* up, int64_t ld, int64_t rows, int64_t inter, float* out) {
  run_parts(rows * inter < (1 << 15) ? 1 : kernel_threads(), [&](int part, int parts) {
    long b, e;
    part_range(static_cast<long>(rows), part, parts, &b, &e);
    if (rows == 1) part_range(static_cast<long>(inter), part, parts, &b, &e);
    const int64_t r0 = rows == 1 ? 0 : b, r1 = rows == 1 ? 1 : e;
    const int64_t c0 = rows == 1 ? b : 0, c1 = rows == 1 ? e : inter;
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = gate + r * ld;
      const float* u = up + r * ld;
      float* o = out + r * inter;
      for (int64_t i = c0; i < c1; ++i) o[i] = -g[i];
      exp_inplace(o + c0, c1 - c0);
      for (int64_t i = c0; i < c1; ++i) o[i] = g[i] / (1.f + o[i]) * u[i];
    }
  });
}

void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& s, float* out) {
  const int H = s.heads, d = s.head_dim, n = s.n, G = s.heads / s.kv_heads;
  const int64_t total = s.start + n;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t ldo = static_cast<int64_t>(H) * d;
  // Keys visible to the query at position pos: [lo(pos), pos + 1).
  auto lo_of = [&](int64_t pos) { return s.sliding_window > 0 ? std::max<int64_t>(0, pos - s.sliding_window + 1) : 0; };

  if (n <= 4) {  // decode: loops, heads spread over the cores
    std::vector<float> scores(static_cast<size_t>(H) * total);
    // One part per head (claimed by the threads as they go) once there is work for two threads.
    run_parts(H * total * d < (1 << 14) || kernel_threads() <= 1 ? 1 : H, [&](int part, int parts) {
      long hb, he;
      part_range(H, part, parts, &hb, &he);
      for (int h = static_cast<int>(hb); h < he; ++h) {
        const float* K = k + (h / G) * s.kv_head_stride;
        const float* V = v + (h / G) * s.kv_head_stride;
        float* sc = scores.data() + static_cast<int64_t>(h) * total;
        for (int i = 0; i < n; ++i) {
          const int64_t pos = s.start + i, lo = lo_of(pos);
          const float* qi = q + (static_cast<int64_t>(h) * n + i) * d;
          float* o = out + i * ldo + static_cast<int64_t>(h) * d;
          if (attend_row_avx2(qi, K, V, lo, pos + 1, d, scale, sc, o)) continue;
          for (int64_t t = lo; t <= pos; ++t) sc[t] = dot_stored(DType::F32, K + t * d, qi, d);
          softmax_range(sc, pos + 1, lo, pos + 1, scale);
          std::fill(o, o + d, 0.f);
          for (int64_t t = lo; t <= pos; ++t) {
            const float p = sc[t];
            const float* vt = V + t * d;
            for (int j = 0; j < d; ++j) o[j] += p * vt[j];
          }
        }
      }
    });
    return;
  }

  if (causal_attention_fused(q, k, v, s, out)) return;
  // Prefill without AVX2: heads spread over the cores, each head's blocks of query rows run with
  // single-threaded GEMMs (a head's [rows, cols, d] products are too small for OpenBLAS's own
  // threads to pay off); a block sees keys [0, start + its last row + 1).
  constexpr int kBlock = 256;
  const int parts = std::min(H, kernel_threads());
  ScopedBlasThreads blas(1);
  run_parts(parts, [&](int part, int n_parts) {
    long hb, he;
    part_range(H, part, n_parts, &hb, &he);
    std::vector<float> p(static_cast<size_t>(std::min(n, kBlock)) * total);
    for (int h = static_cast<int>(hb); h < he; ++h) {
      const float* K = k + (h / G) * s.kv_head_stride;
      const float* V = v + (h / G) * s.kv_head_stride;
      const float* Q = q + static_cast<int64_t>(h) * n * d;
      for (int i0 = 0; i0 < n; i0 += kBlock) {
        const int rows = std::min(kBlock, n - i0);
        const int64_t hi = s.start + i0 + rows;                // keys seen by the block's last row
        const int64_t first_lo = lo_of(s.start + i0);          // ... and by its first row
        const int64_t cols = hi - first_lo;
        sgemm(false, true, rows, cols, d, 1.f, Q + static_cast<int64_t>(i0) * d, d, K + first_lo * d, d, 0.f, p.data(), cols);
        for (int r = 0; r < rows; ++r) {
          const int64_t pos = s.start + i0 + r;
          softmax_range(p.data() + r * cols, cols, lo_of(pos) - first_lo, pos + 1 - first_lo, scale);
        }
        sgemm(false, false, rows, d, cols, 1.f, p.data(), cols, V + first_lo * d, d, 0.f,
              out + static_cast<int64_t>(i0) * ldo + static_cast<int64_t>(h) * d, ldo);
      }
    }
  });
}

}  // namespace kvscope
