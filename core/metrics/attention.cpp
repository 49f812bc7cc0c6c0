#include "core/metrics/attention.h"
#include "core/metrics/attention_sample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "core/quant/quantized_tensor.h"
#include "core/tensor/compute_threads.h"
#include "core/tensor/matmul.h"

namespace kvscope {

std::vector<int> sample_positions(int tokens, int n) {
  std::vector<int> p;
  if (n <= 0 || n >= tokens) {
    for (int i = 0; i < tokens; ++i) p.push_back(i);
    return p;
  }
  if (n == 1) return {tokens - 1};
  for (int i = 0; i < n; ++i) p.push_back(static_cast<int>(std::llround(double(i) * (tokens - 1) / (n - 1))));
  p.erase(std::unique(p.begin(), p.end()), p.end());
  return p;
}

double attention_products(int layers, int q_heads, int head_dim, const std::vector<int>& positions) {
  double keys = 0;
  for (int p : positions) keys += p + 1.0;
  return double(layers) * q_heads * head_dim * 4.0 * keys;
}

int auto_attn_queries(int layers, int q_heads, int head_dim, int tokens) {
  for (int n = kDefaultAttnQueries; n > kMinAutoAttnQueries; --n)
    if (attention_products(layers, q_heads, head_dim, sample_positions(tokens, n)) <= kAttnProductBudget) return n;
  return kMinAutoAttnQueries;
}

void AttentionSums::merge(const AttentionSums& o) {
  out_err2 += o.out_err2;
  out_ref2 += o.out_ref2;
  out_cos_sum += o.out_cos_sum;
  out_cos_min = std::min(out_cos_min, o.out_cos_min);
  kl_sum += o.kl_sum;
  prob_cos_sum += o.prob_cos_sum;
  logit_err2 += o.logit_err2;
  logit_max_abs = std::max(logit_max_abs, o.logit_max_abs);
  logit_count += o.logit_count;
  rows += o.rows;
}

AttentionMetrics AttentionSums::metrics(int layer, int head) const {
  AttentionMetrics m;
  m.layer = layer;
  m.head = head;
  if (rows == 0) return m;
  m.out_cos_mean = out_cos_sum / rows;
  m.out_cos_min = out_cos_min;
  m.out_nmse = out_ref2 > 0 ? out_err2 / out_ref2 : 0;
  m.kl_mean = kl_sum / rows;
  m.prob_cos_mean = prob_cos_sum / rows;
  m.logit_rmse = logit_count > 0 ? std::sqrt(logit_err2 / logit_count) : 0;
  m.logit_max_abs = logit_max_abs;
  return m;
}

namespace {

// exp(x) for x <= 0 (arguments are shifted by the row max): Cephes expf polynomial on the reduced
// argument, 2^n by exponent bits. ~1 ulp; vectorizes, unlike libm's expf.
// Arguments below -40 return 0: e^-40 = 4e-18 is nothing next to the row's largest term (1), and
// keeping such values would create subnormal products (e*e < 1e-38), which are ~100x slower.
inline float exp_nonpos(float x) {
  const bool tiny = x < -40.0f;
  x = x > -40.0f ? x : -40.0f;
  float n = rint_small(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return tiny ? 0.0f : y * scale;
}

struct RowStats {
  float z = 0, zh = 0;           // softmax normalizers (after max subtraction)
  double kl = 0, prob_cos = 0;
  double logit_err2 = 0, logit_max = 0;
};

// Turns logits rows l, lh (n valid entries, the rest up to `width` zeroed) into unnormalized
// probabilities in place and returns the row's KL, probability cosine and logit error.
__attribute__((target_clones("avx2", "default"))) RowStats fused_softmax_stats(float* l, float* lh, int n,
                                                                                 int width) {
  float m = -INFINITY, mh = -INFINITY;
#pragma omp simd reduction(max : m, mh)
  for (int j = 0; j < n; ++j) {
    m = l[j] > m ? l[j] : m;
    mh = lh[j] > mh ? lh[j] : mh;
  }
  float z = 0, zh = 0, kl = 0, dot = 0, e2 = 0, eh2 = 0, err2 = 0, emax = 0;
#pragma omp simd reduction(+ : z, zh, kl, dot, e2, eh2, err2) reduction(max : emax)
  for (int j = 0; j < n; ++j) {
    float e = exp_nonpos(l[j] - m), eh = exp_nonpos(lh[j] - mh);
    float d = lh[j] - l[j];
    z += e;
    zh += eh;
    kl -= e * d;
    dot += e * eh;
    e2 += e * e;
    eh2 += eh * eh;
    err2 += d * d;
    float ad = std::fabs(d);
    emax = ad > emax ? ad : emax;
    l[j] = e;
    lh[j] = eh;
  }
  for (int j = n; j < width; ++j) l[j] = lh[j] = 0.0f;
  RowStats s;
  s.z = z;
  s.zh = zh;
  // KL(P||P^) = sum_j P_j (l_j - l^_j) + lse(l^) - lse(l)   (ModelOpt's identity, §7)
  s.kl = double(kl) / z + (double(mh) + std::log(double(zh))) - (double(m) + std::log(double(z)));
  if (s.kl < 0) s.kl = 0;  // rounding can leave -1e-9 for identical rows
  s.prob_cos = (e2 > 0 && eh2 > 0) ? double(dot) / std::sqrt(double(e2) * double(eh2)) : 1.0;
  s.logit_err2 = err2;
  s.logit_max = emax;
  return s;
}

// Buffers of uninitialized floats that only grow.
class Scratch {
 public:
  float* get(int i, size_t n) {
    if (size_[i] < n) p_[i].reset(new float[n]), size_[i] = n;
    return p_[i].get();
  }

 private:
  std::unique_ptr<float[]> p_[5];
  size_t size_[5] = {};
};

}  // namespace

AttentionSums attention_error(const std::vector<const float*>& q, const float* k, const float* v, const float* kq,
                              const float* vq, int T, int D, const std::vector<int>& positions) {
  AttentionSums total;
  configure_compute_threads();
  if (!positions.empty() && positions.back() >= T) throw std::out_of_range("attention_error: position past the end");
  const int G = static_cast<int>(q.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Chunks of sorted positions, rows position-major (row i * G + g: position i of the chunk, query
  // head g). The keys split at the chunk's positions: block b = keys (p_{b-1}, p_b] is seen by the
  // rows of positions b.. only, a contiguous run of rows, so every product skips the masked keys.
  constexpr int kChunk = 8;
  // Per-thread buffers sized once for the longest chunk (no zeroing, no regrowth: freshly mapped
  // pages for every (layer, head) cost more than the products of a short sample).
  thread_local Scratch buf;
  const size_t rows = static_cast<size_t>(G) * kChunk;
  float* const qc = buf.get(0, rows * D);
  float* const s = buf.get(1, rows * T);
  float* const sh = buf.get(2, rows * T);
  float* const o = buf.get(3, rows * D);
  float* const oh = buf.get(4, rows * D);
  std::vector<RowStats> stats(rows);
  for (size_t c0 = 0; c0 < positions.size(); c0 += kChunk) {
    const int C = static_cast<int>(std::min<size_t>(kChunk, positions.size() - c0));
    const int* pos = positions.data() + c0;
    const int N = pos[C - 1] + 1;  // keys this chunk can see
    const int R = G * C;
    for (int i = 0; i < C; ++i)
      for (int g = 0; g < G; ++g) {
        const float* src = q[g] + static_cast<size_t>(pos[i]) * D;
        float* dst = qc + (static_cast<size_t>(i) * G + g) * D;
        for (int d = 0; d < D; ++d) dst[d] = src[d] * scale;
      }
    // Key block b: [lo, hi) = [p_{b-1} + 1, p_b + 1), rows [b * G, R).
    auto blocks = [&](auto&& f) {
      for (int b = 0, lo = 0; b < C; ++b) {
        const int hi = pos[b] + 1;
        if (hi > lo) f(b * G, R - b * G, lo, hi - lo, lo == 0);
        lo = std::max(lo, hi);
      }
    };
    blocks([&](int r0, int m, int lo, int n, bool) {
      const float* a = qc + static_cast<size_t>(r0) * D;
      const size_t at = static_cast<size_t>(r0) * N + lo;
      sgemm(false, true, m, n, D, 1.f, a, D, k + static_cast<size_t>(lo) * D, D, 0.f, s + at, N);
      sgemm(false, true, m, n, D, 1.f, a, D, kq + static_cast<size_t>(lo) * D, D, 0.f, sh + at, N);
    });
    // Serial: callers run one (layer, head) per worker thread (coarse grains survive a busy machine).
    for (int r = 0; r < R; ++r)
      stats[r] = fused_softmax_stats(s + static_cast<size_t>(r) * N, sh + static_cast<size_t>(r) * N,
                                     pos[r / G] + 1, pos[r / G] + 1);  // the masked keys are never read
    blocks([&](int r0, int m, int lo, int n, bool first) {
      const size_t at = static_cast<size_t>(r0) * N + lo;
      const float beta = first ? 0.f : 1.f;
      sgemm(false, false, m, D, n, 1.f, s + at, N, v + static_cast<size_t>(lo) * D, D, beta, o + r0 * D, D);
      sgemm(false, false, m, D, n, 1.f, sh + at, N, vq + static_cast<size_t>(lo) * D, D, beta, oh + r0 * D, D);
    });
    for (int g = 0; g < G; ++g)  // query head-major, as the sums have always been taken
      for (int i = 0; i < C; ++i) {
        const int r = i * G + g;
        const RowStats& st = stats[r];
        double err2 = 0, ref2 = 0, hat2 = 0, dot = 0;
        for (int d = 0; d < D; ++d) {
          double a = o[static_cast<size_t>(r) * D + d] / st.z, b = oh[static_cast<size_t>(r) * D + d] / st.zh;
          err2 += (a - b) * (a - b);
          ref2 += a * a;
          hat2 += b * b;
          dot += a * b;
        }
        double cosv = (ref2 > 0 && hat2 > 0) ? dot / (std::sqrt(ref2 * hat2)) : (ref2 == hat2 ? 1.0 : 0.0);
        total.out_err2 += err2;
        total.out_ref2 += ref2;
        total.out_cos_sum += cosv;
        total.out_cos_min = std::min(total.out_cos_min, cosv);
        total.kl_sum += st.kl;
        total.prob_cos_sum += st.prob_cos;
        total.logit_err2 += st.logit_err2;
        total.logit_max_abs = std::max(total.logit_max_abs, st.logit_max);
        total.logit_count += pos[i] + 1;
        total.rows += 1;
      }
  }
  return total;
}

AttentionSums attention_error_reference(const std::vector<const float*>& q, const float* k, const float* v,
                                        const float* kq, const float* vq, int T, int D,
                                        const std::vector<int>& positions) {
  (void)T;
  AttentionSums total;
  const double scale = 1.0 / std::sqrt(double(D));
  for (const float* qh : q)
    for (int p : positions) {
      std::vector<double> l(p + 1), lh(p + 1);
      for (int j = 0; j <= p; ++j) {
        double a = 0, b = 0;
        for (int d = 0; d < D; ++d) {
          a += double(qh[size_t(p) * D + d]) * k[size_t(j) * D + d];
          b += double(qh[size_t(p) * D + d]) * kq[size_t(j) * D + d];
        }
        l[j] = a * scale;
        lh[j] = b * scale;
      }
      double m = *std::max_element(l.begin(), l.end()), mh = *std::max_element(lh.begin(), lh.end());
      double z = 0, zh = 0;
      for (int j = 0; j <= p; ++j) z += std::exp(l[j] - m), zh += std::exp(lh[j] - mh);
      std::vector<double> P(p + 1), Ph(p + 1);
      double kl = 0, dot = 0, n1 = 0, n2 = 0;
      for (int j = 0; j <= p; ++j) {
        P[j] = std::exp(l[j] - m) / z;
        Ph[j] = std::exp(lh[j] - mh) / zh;
        if (P[j] > 0) kl += P[j] * (std::log(P[j]) - std::log(Ph[j]));
        dot += P[j] * Ph[j], n1 += P[j] * P[j], n2 += Ph[j] * Ph[j];
        total.logit_err2 += (lh[j] - l[j]) * (lh[j] - l[j]);
        total.logit_max_abs = std::max(total.logit_max_abs, std::fabs(lh[j] - l[j]));
      }
      total.logit_count += p + 1;
      double err2 = 0, ref2 = 0, hat2 = 0, od = 0;
      for (int d = 0; d < D; ++d) {
        double a = 0, b = 0;
        for (int j = 0; j <= p; ++j) a += P[j] * v[size_t(j) * D + d], b += Ph[j] * vq[size_t(j) * D + d];
        err2 += (a - b) * (a - b), ref2 += a * a, hat2 += b * b, od += a * b;
      }
      double cosv = od / std::sqrt(ref2 * hat2);
      total.out_err2 += err2;
      total.out_ref2 += ref2;
      total.out_cos_sum += cosv;
      total.out_cos_min = std::min(total.out_cos_min, cosv);
      total.kl_sum += kl;
      total.prob_cos_sum += dot / std::sqrt(n1 * n2);
      total.rows += 1;
    }
  return total;
}

}  // namespace kvscope
