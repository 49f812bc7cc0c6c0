#include "core/metrics/tensor_error.h"

#include <algorithm>
#include <cmath>

namespace kvscope {

// Float partial sums over short blocks (vectorizes), carried in double across blocks so long
// tensors do not lose precision.
__attribute__((target_clones("avx2", "default"))) void ErrorSums::add(const float* x, const float* y, size_t count) {
  constexpr size_t kBlock = 256;
  for (size_t b = 0; b < count; b += kBlock) {
    size_t e = std::min(count, b + kBlock);
    float s_err = 0, s_ref = 0, s_hat = 0, s_dot = 0, m = 0;
#pragma omp simd reduction(+ : s_err, s_ref, s_hat, s_dot) reduction(max : m)
    for (size_t i = b; i < e; ++i) {
      float d = x[i] - y[i];
      s_err += d * d;
      s_ref += x[i] * x[i];
      s_hat += y[i] * y[i];
      s_dot += x[i] * y[i];
      float a = std::fabs(d);
      m = a > m ? a : m;
    }
    err2 += s_err;
    ref2 += s_ref;
    hat2 += s_hat;
    dot += s_dot;
    max_abs = std::max(max_abs, static_cast<double>(m));
  }
  n += count;
}

void ErrorSums::merge(const ErrorSums& o) {
  err2 += o.err2;
  ref2 += o.ref2;
  hat2 += o.hat2;
  dot += o.dot;
  max_abs = std::max(max_abs, o.max_abs);
  n += o.n;
}

double ErrorSums::cos() const {
  if (ref2 == 0 && hat2 == 0) return 1.0;  // both all-zero: identical
  if (ref2 == 0 || hat2 == 0) return 0.0;
  return dot / std::sqrt(ref2 * hat2);
}

}  // namespace kvscope
