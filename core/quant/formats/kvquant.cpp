// KVQuant; see kvquant.h.
#include "core/quant/formats/kvquant.h"

#include <algorithm>
#include <cmath>

#include "core/quant/formats/lloyd.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope::formats {

namespace {

int ceil_log2(uint64_t n) {  // bits to index n distinct things
  int b = 0;
  while ((uint64_t(1) << b) < n) ++b;
  return b;
}

int outliers_per_token(const KvQuantOptions& o, int d) {
  return static_cast<int>(std::lround(o.outlier_fraction * d));
}

float normalize(float x, float lo, float hi) {
  const float w = hi - lo;
  if (!(w > 0.0f)) return 0.0f;
  return std::clamp(2.0f * (x - lo) / w - 1.0f, -1.0f, 1.0f);
}
float denormalize(float u, float lo, float hi) { return lo + 0.5f * (u + 1.0f) * (hi - lo); }

// Values: marks the `k` largest |x| of one token as outliers and returns the range of the rest.
void token_range(const float* x, int d, int k, std::vector<int>* order, std::vector<char>* is_out, float* lo, float* hi) {
  is_out->assign(static_cast<size_t>(d), 0);
  if (k > 0) {
    order->resize(static_cast<size_t>(d));
    for (int i = 0; i < d; ++i) (*order)[i] = i;
    std::partial_sort(order->begin(), order->begin() + k, order->end(),
                      [&](int a, int b) { return std::fabs(x[a]) > std::fabs(x[b]) || (std::fabs(x[a]) == std::fabs(x[b]) && a < b); });
    for (int i = 0; i < k; ++i) (*is_out)[(*order)[i]] = 1;
  }
  float l = INFINITY, h = -INFINITY;
  for (int i = 0; i < d; ++i)
    if (!(*is_out)[i]) l = std::min(l, x[i]), h = std::max(h, x[i]);
  if (l > h) l = h = 0.0f;
  *lo = round_to_f16(l);
  *hi = round_to_f16(h);
}

// Q-Norm: decode levels = (enc - mean_q) * sd / sd_q + mean, so the quantized samples keep the mean
// and standard deviation of the samples.
std::vector<float> q_norm_levels(const std::vector<float>& samples, const std::vector<float>& enc) {
  double m = 0, m2 = 0, mq = 0, mq2 = 0;
  const int k = static_cast<int>(enc.size());
  for (float u : samples) {
    const double q = enc[static_cast<size_t>(nearest_centroid(enc.data(), k, u))];
    m += u, m2 += double(u) * u, mq += q, mq2 += q * q;
  }
  const double n = static_cast<double>(samples.size());
  m /= n, mq /= n;
  const double sd = std::sqrt(std::max(0.0, m2 / n - m * m)), sdq = std::sqrt(std::max(0.0, mq2 / n - mq * mq));
  std::vector<float> dec(enc.size());
  for (size_t i = 0; i < enc.size(); ++i)
    dec[i] = round_to_f16(static_cast<float>(sdq > 0 ? (enc[i] - mq) * sd / sdq + m : enc[i]));
  return dec;
}

}  // namespace

KvQuantCalibration kvquant_calibrate(const float* calib, int heads, int tokens, int d, bool keys, const KvQuantOptions& o) {
  if (o.bits < 1 || o.bits > 8) fail("kvquant", "bits must be in 1..8 (got {})", o.bits);
  if (!(o.outlier_fraction >= 0.0 && o.outlier_fraction < 0.5))
    fail("kvquant", "outlier_fraction must be in [0, 0.5) (got {})", o.outlier_fraction);
  if (o.fp16_tokens < 0) fail("kvquant", "fp16_tokens must be >= 0 (got {})", o.fp16_tokens);
  const int first = o.fp16_tokens, n = tokens - first;
  if (n < 1) fail("kvquant", "calibration has {} tokens; needs more than the {} fp16 tokens", tokens, first);
  KvQuantCalibration cal;
  cal.keys = keys;
  cal.heads = heads;
  cal.head_dim = d;
  std::vector<float> samples;
  samples.reserve(static_cast<size_t>(heads) * n * d);
  std::vector<float> col(static_cast<size_t>(n));
  std::vector<int> order;
  std::vector<char> is_out;
  for (int h = 0; h < heads; ++h) {
    const float* xh = calib + static_cast<size_t>(h) * tokens * d;
    if (keys) {
      for (int c = 0; c < d; ++c) {
        for (int t = 0; t < n; ++t) col[t] = xh[static_cast<size_t>(first + t) * d + c];
        std::sort(col.begin(), col.end());
        // The f/2 and 1 - f/2 quantiles (order statistics) bound the dense range.
        const int cut = static_cast<int>(std::floor(0.5 * o.outlier_fraction * n));
        const float lo = round_to_f16(col[static_cast<size_t>(cut)]);
        const float hi = round_to_f16(col[static_cast<size_t>(n - 1 - cut)]);
        cal.lo.push_back(lo);
        cal.hi.push_back(hi);
        for (int t = cut; t < n - cut; ++t) samples.push_back(normalize(col[t], lo, hi));
      }
    } else {
      const int k = outliers_per_token(o, d);
      for (int t = first; t < tokens; ++t) {
        const float* x = xh + static_cast<size_t>(t) * d;
        float lo, hi;
        token_range(x, d, k, &order, &is_out, &lo, &hi);
        for (int c = 0; c < d; ++c)
          if (!is_out[c]) samples.push_back(normalize(x[c], lo, hi));
      }
    }
  }
  cal.enc = kmeans_codebook(samples, o.bits);
  cal.dec = o.q_norm ? q_norm_levels(samples, cal.enc) : cal.enc;
  if (!o.q_norm)
    for (float& v : cal.dec) v = round_to_f16(v);
  return cal;
}

KvQuantHeadStats kvquant_roundtrip(const KvQuantCalibration& cal, int head, const float* x, int tokens,
                                   const KvQuantOptions& o, float* out) {
  const int d = cal.head_dim;
  const int k = static_cast<int>(cal.enc.size());
  if (head < 0 || head >= cal.heads) fail("kvquant", "head {} is outside the calibration's {} heads", head, cal.heads);
  if (k != (1 << o.bits)) fail("kvquant", "calibration has {} levels, options ask for {} bits", k, o.bits);
  KvQuantHeadStats st;
  const bool sparse = o.outlier_fraction > 0;
  const int idx_bits = ceil_log2(static_cast<uint64_t>(d)), count_bits = ceil_log2(static_cast<uint64_t>(d) + 1);
  const int kv = outliers_per_token(o, d);
  std::vector<int> order;
  std::vector<char> is_out(static_cast<size_t>(d), 0);
  for (int t = 0; t < tokens; ++t) {
    const float* xt = x + static_cast<size_t>(t) * d;
    float* yt = out + static_cast<size_t>(t) * d;
    if (t < o.fp16_tokens) {
      for (int c = 0; c < d; ++c) yt[c] = round_to_f16(xt[c]);
      st.bits += 16ull * d;
      continue;
    }
    float tlo = 0, thi = 0;
    if (!cal.keys) {
      token_range(xt, d, kv, &order, &is_out, &tlo, &thi);
      st.bits += 32;
    }
    uint64_t n_out = 0;
    for (int c = 0; c < d; ++c) {
      const float lo = cal.keys ? cal.lo[static_cast<size_t>(head) * d + c] : tlo;
      const float hi = cal.keys ? cal.hi[static_cast<size_t>(head) * d + c] : thi;
      const bool outlier = cal.keys ? (sparse && (xt[c] < lo || xt[c] > hi)) : is_out[c] != 0;
      if (outlier) {
        yt[c] = round_to_f16(xt[c]);
        ++n_out;
        continue;
      }
      const int q = nearest_centroid(cal.enc.data(), k, normalize(xt[c], lo, hi));
      yt[c] = denormalize(cal.dec[static_cast<size_t>(q)], lo, hi);
    }
    st.bits += uint64_t(d - n_out) * o.bits + n_out * (16 + idx_bits) + (sparse ? count_bits : 0);
    st.outliers += n_out;
  }
  return st;
}

uint64_t kvquant_static_bits(const KvQuantCalibration& cal) {
  return 16ull * cal.dec.size() + (cal.keys ? 32ull * cal.lo.size() : 0);
}

}  // namespace kvscope::formats
