#include "core/tensor/rope.h"

#include <cmath>
#include <vector>

namespace kvscope {

void apply_rope(float* x, int tokens, int D, double theta, int first_pos, bool inverse, bool interleaved) {
  const int half = D / 2;
  std::vector<double> inv_freq(half);
  for (int j = 0; j < half; ++j) inv_freq[j] = std::pow(theta, -2.0 * j / D);
  for (int t = 0; t < tokens; ++t) {
    float* row = x + static_cast<size_t>(t) * D;
    for (int j = 0; j < half; ++j) {
      double a = (first_pos + t) * inv_freq[j];
      double c = std::cos(a), s = inverse ? -std::sin(a) : std::sin(a);
      const int a0 = interleaved ? 2 * j : j, a1 = interleaved ? 2 * j + 1 : j + half;
      double x0 = row[a0], x1 = row[a1];
      row[a0] = static_cast<float>(x0 * c - x1 * s);
      row[a1] = static_cast<float>(x1 * c + x0 * s);
    }
  }
}

}  // namespace kvscope
