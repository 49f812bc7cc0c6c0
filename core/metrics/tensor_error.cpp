#include "core/metrics/tensor_error.h"

#include "core/metrics/error_lanes.h"

#include <algorithm>
#include <cmath>

namespace kvscope {

// Float partial sums over short blocks in sixteen lanes (vectorizes), carried in double across
// blocks so long tensors do not lose precision; the order is spelled out in error_lanes.h so the
// quantizer kernels can sum while they encode and get the same bits.
__attribute__((target_clones("avx2", "default"))) void ErrorSums::add(const float* x, const float* y, size_t count) {
  ErrorLanes lanes(this);
  lanes.add(x, y, count);
  lanes.finish();
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
