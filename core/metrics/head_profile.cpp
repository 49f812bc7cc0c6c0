#include "core/metrics/head_profile.h"

#include <algorithm>
#include <cmath>

#include "core/quant/formats/hadamard.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

std::vector<float> channel_max(const float* x, int tokens, int dim) {
  std::vector<float> m(dim, 0.0f);
  for (int t = 0; t < tokens; ++t)
    for (int c = 0; c < dim; ++c) m[c] = std::max(m[c], std::abs(x[static_cast<size_t>(t) * dim + c]));
  return m;
}

}  // namespace

std::vector<int> outlier_channels(const std::vector<float>& channel_max_abs, double ratio) {
  if (channel_max_abs.empty()) return {};
  std::vector<float> sorted = channel_max_abs;
  size_t mid = sorted.size() / 2;
  std::nth_element(sorted.begin(), sorted.begin() + mid, sorted.end());
  double median = sorted[mid];
  if (sorted.size() % 2 == 0) {
    // Even count: average the two middle values.
    float lower = *std::max_element(sorted.begin(), sorted.begin() + mid);
    median = 0.5 * (median + lower);
  }
  std::vector<int> out;
  for (int c = 0; c < static_cast<int>(channel_max_abs.size()); ++c)
    if (channel_max_abs[c] >= ratio * median && channel_max_abs[c] > 0) out.push_back(c);
  std::stable_sort(out.begin(), out.end(), [&](int a, int b) { return channel_max_abs[a] > channel_max_abs[b]; });
  return out;
}

HeadProfile profile_head(const KvDump& dump, int layer, int head, char kind, const float* dequantized,
                         double outlier_ratio, const RotationSpec* rotation) {
  const DumpShape& s = dump.shape;
  if (layer < 0 || layer >= s.layers || head < 0 || head >= s.kv_heads || (kind != 'k' && kind != 'v'))
    fail("head profile", "no head (layer {}, head {}, kind {}) in a dump of {} layers x {} KV heads", layer, head,
         kind, s.layers, s.kv_heads);
  HeadProfile p;
  p.layer = layer;
  p.head = head;
  p.kind = kind;
  const float* x = kind == 'k' ? dump.k(layer, head) : dump.v(layer, head);
  p.channel_max_abs = channel_max(x, s.tokens, s.head_dim);
  if (kind == 'k' && dump.has_k_pre_rope()) {
    const float* pre = dump.layers[layer].k_pre_rope.data() + static_cast<size_t>(head) * dump.head_elems();
    p.channel_max_abs_pre_rope = channel_max(pre, s.tokens, s.head_dim);
  }
  if (rotation && rotation->applies(kind)) {
    std::vector<float> r(x, x + dump.head_elems());
    formats::HadamardRotation(s.head_dim, rotation->seed_of(kind)).rotate(r.data(), static_cast<size_t>(s.tokens));
    p.channel_max_abs_rotated = channel_max(r.data(), s.tokens, s.head_dim);
  }
  if (dequantized) {
    p.token_error.resize(s.tokens);
    for (int t = 0; t < s.tokens; ++t) {
      double err = 0, ref = 0;
      for (int c = 0; c < s.head_dim; ++c) {
        size_t i = static_cast<size_t>(t) * s.head_dim + c;
        double d = double(x[i]) - dequantized[i];
        err += d * d;
        ref += double(x[i]) * x[i];
      }
      p.token_error[t] = ref > 0 ? static_cast<float>(err / ref) : (err > 0 ? INFINITY : 0.0f);
    }
  }
  p.outlier_channels = outlier_channels(p.channel_max_abs, outlier_ratio);
  return p;
}

}  // namespace kvscope
