#pragma once
// Internal to core/: the summation order of ErrorSums::add, spelled out so a kernel can sum while
// it encodes and get the same bits. Elements are summed in float in blocks of 256 counted from the
// first element; inside a block the whole 8-element chunks go to 8 lanes (element i to lane i % 8),
// the elements after the last whole chunk of a block go to lane 0, the lanes fold in order
// (((0 + l0) + l1) + ... + l7), and each block's float sums are added in double. This is the order
// GCC gave the former `omp simd` loop on AVX2 (checked bit for bit), now the same on every CPU.
#include <cstdint>
#include <cstring>

#include "core/metrics/tensor_error.h"

// Inline helpers taking and returning vectors: never across a library boundary, so GCC's note
// that AVX vector arguments change the ABI without AVX does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace kvscope {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, const v8f& v) { std::memcpy(p, &v, sizeof v); }

inline float fold8_sum(const v8f& v) {
  float s = 0;
  for (int l = 0; l < 8; ++l) s += v[l];
  return s;
}
inline float fold8_max(const v8f& v) {
  float m = 0;
  for (int l = 0; l < 8; ++l) m = v[l] > m ? v[l] : m;
  return m;
}

// The float partial sums of the current block, lane by lane: small enough for registers.
struct BlockLanes {
  v8f err{}, ref{}, hat{}, dot{}, max{};
  unsigned pos = 0;  // elements of the block summed
  static constexpr unsigned kBlock = 256;

  void add8(const v8f& x, const v8f& y) {
    const v8f d = x - y;
    err += d * d;
    ref += x * x;
    hat += y * y;
    dot += x * y;
    const v8f a = reinterpret_cast<v8f>(reinterpret_cast<v8i>(d) & 0x7fffffff);
    max = a > max ? a : max;
    pos += 8;
  }
  bool full() const { return pos == kBlock; }
  // The block's sums into `out` (in double).
  void close(ErrorSums* out) const {
    out->err2 += fold8_sum(err);
    out->ref2 += fold8_sum(ref);
    out->hat2 += fold8_sum(hat);
    out->dot += fold8_sum(dot);
    const double m = fold8_max(max);
    out->max_abs = out->max_abs > m ? out->max_abs : m;
    out->n += pos;
  }
};

// Error sums fed in pieces of any length, in element order from the start of the tensor.
class ErrorLanes {
 public:
  explicit ErrorLanes(ErrorSums* out) : out_(out) {}
  ErrorSums* out() const { return out_; }
  // The current block, for a kernel that sums in its own loop (only when pending() == 0):
  // take it, add whole chunks, close() it into out() whenever full(), give it back.
  BlockLanes& block() { return b_; }
  unsigned pending() const { return npend_; }

  void add8(const v8f& x, const v8f& y) {
    b_.add8(x, y);
    if (b_.full()) b_.close(out_), b_ = BlockLanes{};
  }
  // The next element: held until it completes a chunk of 8.
  void add1(float x, float y) {
    px_[npend_] = x, py_[npend_] = y;
    if (++npend_ == 8) {
      npend_ = 0;
      add8(load8(px_), load8(py_));
    }
  }
  void add(const float* x, const float* y, size_t n) {
    size_t i = 0;
    for (; i < n && npend_ != 0; ++i) add1(x[i], y[i]);
    for (; i + 8 <= n; i += 8) add8(load8(x + i), load8(y + i));
    for (; i < n; ++i) add1(x[i], y[i]);
  }
  // The end of the tensor: pending elements go to lane 0, and a partly filled block is added.
  void finish() {
    for (unsigned i = 0; i < npend_; ++i) {
      const float d = px_[i] - py_[i], a = __builtin_fabsf(d);
      b_.err[0] += d * d;
      b_.ref[0] += px_[i] * px_[i];
      b_.hat[0] += py_[i] * py_[i];
      b_.dot[0] += px_[i] * py_[i];
      b_.max[0] = a > b_.max[0] ? a : b_.max[0];
    }
    b_.pos += npend_;
    npend_ = 0;
    if (b_.pos > 0) b_.close(out_), b_ = BlockLanes{};
  }

 private:
  ErrorSums* out_;
  BlockLanes b_;
  unsigned npend_ = 0;  // single elements held
  float px_[8], py_[8];
};

}  // namespace kvscope

#pragma GCC diagnostic pop
