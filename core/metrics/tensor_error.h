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

// Tensor-level error of one (layer, KV head, kind) after quantize -> dequantize, with the slice's
// exact size from the quantizer's bit accounting.
struct HeadMetrics {
  int layer = 0;
  int head = 0;       // KV head
  char kind = 'k';    // 'k' or 'v'
  double nmse = 0;    // sum (x - x^)^2 / sum x^2
  double cos = 1;     // cosine of the flattened head matrix
  double mse = 0;     // sum (x - x^)^2 / elements (kvmix's "norm_mse")
  double max_abs = 0; // max |x - x^|
  uint64_t bits = 0;      // exact stored size: codes + scales + zero points + fp16 tokens + side info
  uint64_t elements = 0;  // tokens * head_dim
  bool full_precision = false;  // the whole head was kept in fp16 (e.g. a kvmix outlier K head)
  double bits_per_element() const { return elements ? double(bits) / double(elements) : 0.0; }
};

}  // namespace kvscope
