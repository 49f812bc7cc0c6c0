#pragma once
// Error sums between a tensor and its reconstruction; aggregate by merging sums, never by
// averaging per-head ratios (ALGORITHMS.md §0.4, §7).
#include <cstddef>
#include <cstdint>

namespace kvscope {

struct ErrorSums {
  double err2 = 0;   // sum (x - y)^2
  double ref2 = 0;   // sum x^2
  double hat2 = 0;   // sum y^2
  double dot = 0;    // sum x*y
  double max_abs = 0;
  uint64_t n = 0;

  void add(const float* x, const float* y, size_t count);
  void merge(const ErrorSums& o);
  double nmse() const { return ref2 > 0 ? err2 / ref2 : (err2 > 0 ? INFINITY_ : 0.0); }
  double mse() const { return n ? err2 / double(n) : 0.0; }
  double cos() const;

 private:
  static constexpr double INFINITY_ = __builtin_inf();
};

}  // namespace kvscope
