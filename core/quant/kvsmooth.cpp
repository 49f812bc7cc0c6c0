#include "core/quant/kvsmooth.h"

#include <algorithm>
#include <cmath>

#include "core/util/error.h"

namespace kvscope {

std::vector<float> kvsmooth_scales_from_max(const float* m, int H, int D, double factor, bool interleaved,
                                            bool shared_over_heads) {
  const int out_heads = shared_over_heads ? 1 : H;
  std::vector<float> s(static_cast<size_t>(out_heads) * D);
  for (int oh = 0; oh < out_heads; ++oh)
    for (int j = 0; j < D / 2; ++j) {
      int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + D / 2;
      float mx = 0;
      for (int h = shared_over_heads ? 0 : oh; h < (shared_over_heads ? H : oh + 1); ++h)
        mx = std::max({mx, m[h * D + a], m[h * D + b]});
      float v = static_cast<float>(std::pow(mx, factor));
      v = std::max(v, 1e-5f);  // a dead pair would divide by zero
      s[oh * D + a] = s[oh * D + b] = v;
    }
  return s;
}

std::vector<float> kvsmooth_scales(const float* k, int H, int T, int D, double factor, bool interleaved) {
  std::vector<float> m(static_cast<size_t>(H) * D, 0.0f);
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) {
      const float* row = k + (static_cast<size_t>(h) * T + t) * D;
      for (int c = 0; c < D; ++c) m[h * D + c] = std::max(m[h * D + c], std::fabs(row[c]));
    }
  return kvsmooth_scales_from_max(m.data(), H, D, factor, interleaved, false);
}

bool glob_match(const std::string& p, const std::string& s) {
  size_t i = 0, j = 0, star = std::string::npos, mark = 0;
  while (j < s.size()) {
    if (i < p.size() && (p[i] == '?' || p[i] == s[j])) ++i, ++j;
    else if (i < p.size() && p[i] == '*') star = i++, mark = j;
    else if (star != std::string::npos) i = star + 1, j = ++mark;
    else return false;
  }
  while (i < p.size() && p[i] == '*') ++i;
  return i == p.size();
}

std::vector<bool> kvsmooth_layers(const SmoothOptions& spec, int layers, const std::string& where) {
  std::vector<bool> on(layers, false);
  auto name = [](int l) { return "model.layers." + std::to_string(l) + ".self_attn"; };
  for (const auto* list : {&spec.include, &spec.exclude})
    for (const auto& pat : *list) {
      bool any = false;
      for (int l = 0; l < layers; ++l) any |= glob_match(pat, name(l));
      if (!any) fail(where, "kvsmooth pattern '{}' matched no attention module (names are model.layers.N.self_attn, N < {})", pat, layers);
    }
  for (int l = 0; l < layers; ++l) {
    bool inc = std::any_of(spec.include.begin(), spec.include.end(), [&](auto& p) { return glob_match(p, name(l)); });
    bool exc = std::any_of(spec.exclude.begin(), spec.exclude.end(), [&](auto& p) { return glob_match(p, name(l)); });
    on[l] = inc && !exc;
  }
  return on;
}

}  // namespace kvscope
