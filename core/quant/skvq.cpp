#include "core/quant/skvq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/quant/quantized_tensor.h"  // rint_small
#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope {

SkvqReorder skvq_identity_groups(int C, int g) {
  SkvqReorder r;
  r.perm.resize(C);
  std::iota(r.perm.begin(), r.perm.end(), 0);
  for (int b = 0; b < C; b += std::max(1, g)) r.bounds.push_back(b);
  r.bounds.push_back(C);
  return r;
}

SkvqReorder skvq_calibrate_reorder(const float* x, int T, int C, int g, int n_init, uint64_t seed) {
  const int k = std::max(1, C / std::max(1, g));
  std::vector<double> px(C, INFINITY), py(C, -INFINITY);  // (min_c, max_c)
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      double v = x[static_cast<size_t>(t) * C + c];
      px[c] = std::min(px[c], v);
      py[c] = std::max(py[c], v);
    }
  std::mt19937_64 rng(seed);
  std::vector<int> best_label(C, 0);
  double best_inertia = INFINITY;
  for (int run = 0; run < n_init && k > 1; ++run) {
    // k-means++ seeding.
    std::vector<double> cx, cy, d2(C, INFINITY);
    int first = static_cast<int>(rng() % C);
    cx.push_back(px[first]), cy.push_back(py[first]);
    while (static_cast<int>(cx.size()) < k) {
      double sum = 0;
      for (int c = 0; c < C; ++c) {
        double d = (px[c] - cx.back()) * (px[c] - cx.back()) + (py[c] - cy.back()) * (py[c] - cy.back());
        d2[c] = std::min(d2[c], d);
        sum += d2[c];
      }
      double r = std::uniform_real_distribution<double>(0, sum)(rng);
      int pick = C - 1;
      for (int c = 0; c < C; ++c)
        if ((r -= d2[c]) <= 0) {
          pick = c;
          break;
        }
      cx.push_back(px[pick]), cy.push_back(py[pick]);
    }
    std::vector<int> label(C, -1);
    double inertia = 0;
    for (int it = 0; it < 300; ++it) {
      bool changed = false;
      inertia = 0;
      for (int c = 0; c < C; ++c) {
        int bj = 0;
        double bd = INFINITY;
        for (int j = 0; j < k; ++j) {
          double d = (px[c] - cx[j]) * (px[c] - cx[j]) + (py[c] - cy[j]) * (py[c] - cy[j]);
          if (d < bd) bd = d, bj = j;
        }
        changed |= label[c] != bj;
        label[c] = bj;
        inertia += bd;
      }
      if (!changed) break;
      std::vector<double> sx(k, 0), sy(k, 0);
      std::vector<int> n(k, 0);
      for (int c = 0; c < C; ++c) sx[label[c]] += px[c], sy[label[c]] += py[c], n[label[c]]++;
      for (int j = 0; j < k; ++j) {
        if (n[j]) {
          cx[j] = sx[j] / n[j], cy[j] = sy[j] / n[j];
        } else {  // empty cluster: move it to the point farthest from its centroid
          int far = 0;
          double fd = -1;
          for (int c = 0; c < C; ++c) {
            double d = (px[c] - cx[label[c]]) * (px[c] - cx[label[c]]) + (py[c] - cy[label[c]]) * (py[c] - cy[label[c]]);
            if (d > fd) fd = d, far = c;
          }
          cx[j] = px[far], cy[j] = py[far];
        }
      }
    }
    if (inertia < best_inertia) best_inertia = inertia, best_label = label;
  }
  // Order clusters by their mean range (max - min) so the permutation does not depend on label numbering.
  std::vector<double> key(k, 0);
  std::vector<int> count(k, 0);
  for (int c = 0; c < C; ++c) key[best_label[c]] += py[c] - px[c], count[best_label[c]]++;
  std::vector<int> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    double ka = count[a] ? key[a] / count[a] : INFINITY, kb = count[b] ? key[b] / count[b] : INFINITY;
    return ka < kb;
  });
  std::vector<int> rank(k);
  for (int i = 0; i < k; ++i) rank[order[i]] = i;
  SkvqReorder r;
  r.perm.resize(C);
  std::iota(r.perm.begin(), r.perm.end(), 0);
  std::stable_sort(r.perm.begin(), r.perm.end(), [&](int a, int b) { return rank[best_label[a]] < rank[best_label[b]]; });
  r.bounds.push_back(0);
  for (int i = 0; i < k; ++i)
    if (count[order[i]] > 0) r.bounds.push_back(r.bounds.back() + count[order[i]]);
  return r;
}

SkvqResult skvq_quantize(const float* x, int T, int C, const SkvqReorder& groups, const SkvqSpec& spec, float* out,
                         bool count_reorder_metadata) {
  if (spec.bits < 1 || spec.bits > 8) throw Error("skvq: bits must be in 1..8");
  if (!(spec.clip_ratio > 0 && spec.clip_ratio <= 1)) throw Error("skvq: clip_ratio must be in (0, 1]");
  if (static_cast<int>(groups.perm.size()) != C || groups.bounds.empty() || groups.bounds.back() != C)
    throw Error("skvq: reorder does not match the channel count");
  const int S = std::min(spec.sinks, T);
  const int W = std::min(spec.window, T - S);
  const float qmax = static_cast<float>((1 << spec.bits) - 1);
  const float a = static_cast<float>(spec.clip_ratio);
  const int n_groups = static_cast<int>(groups.bounds.size()) - 1;
  std::vector<float> xp(C), yp(C);
  std::vector<uint8_t> codes;
  codes.reserve(static_cast<size_t>(std::max(0, T - S - W)) * C);
  for (int t = 0; t < T; ++t) {
    const float* row = x + static_cast<size_t>(t) * C;
    float* o = out + static_cast<size_t>(t) * C;
    if (t < S || t >= T - W) {  // sink and window tokens: fp16
      for (int c = 0; c < C; ++c) o[c] = round_to_f16(row[c]);
      continue;
    }
    for (int i = 0; i < C; ++i) xp[i] = row[groups.perm[i]];
    for (int gi = 0; gi < n_groups; ++gi) {
      const int b0 = groups.bounds[gi], b1 = groups.bounds[gi + 1];
      float mn = INFINITY, mx = -INFINITY;
      for (int i = b0; i < b1; ++i) mn = std::min(mn, xp[i]), mx = std::max(mx, xp[i]);
      // fp16 metadata; codes computed with the stored (rounded) values (§0.3).
      const float s = round_to_f16(std::max((a * mx - a * mn) / qmax, 1e-5f));
      const float zp = round_to_f16(a * mn);
      for (int i = b0; i < b1; ++i) {
        float v = std::clamp((xp[i] - zp) / s, 0.0f, qmax);
        float q = rint_small(v);
        codes.push_back(static_cast<uint8_t>(q));
        yp[i] = q * s + zp;
      }
    }
    for (int i = 0; i < C; ++i) o[groups.perm[i]] = yp[i];
  }
  SkvqResult r;
  const uint64_t nq = static_cast<uint64_t>(std::max(0, T - S - W));
  // Codes are stored packed at `bits` each; scale and zero point are fp16 per group and token.
  r.bits = codes.size() * spec.bits + nq * n_groups * 32 + static_cast<uint64_t>(S + W) * C * 16;
  if (count_reorder_metadata) r.static_bits = 16ull * (C + n_groups + 1);
  r.bits += r.static_bits;
  return r;
}

}  // namespace kvscope
