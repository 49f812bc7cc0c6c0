#pragma once
// Internal to core/: the summation order of ErrorSums::add, spelled out so a kernel can sum while
// it encodes and get the same bits, whatever its vector width:
//   - elements are summed in float in blocks of 256 counted from the first element;
//   - inside a block, element i goes to lane i % 16 (16 lanes: one AVX-512 register, two AVX2 or
//     four SSE2 ones), lane by lane in element order;
//   - the elements after the last whole 16-element chunk of the tensor go to lane 0, in order;
//   - a block's 16 lanes fold as a pairwise tree: t[l] = lane[l] + lane[l + 8] (l < 8), then
//     u[l] = t[l] + t[l + 4] (l < 4), then (u[0] + u[2]) + (u[1] + u[3]);
//   - each block's float sums are added in double.
// The max of |x - y| skips NaN and does not depend on the order.
// tests/core/metrics/test_error_lanes.cpp checks this order against a scalar transcription.
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

__attribute__((always_inline)) inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void store8(float* p, const v8f& v) { std::memcpy(p, &v, sizeof v); }

// Sixteen float lanes as two halves (lanes 0-7, 8-15); the memory layout of a 16-float vector.
struct Lanes16 {
  v8f lo{}, hi{};
};

typedef float v4f __attribute__((vector_size(16)));

// The tree of the header comment, as vector operations (the same additions in the same order).
__attribute__((always_inline)) inline float fold16_sum(const Lanes16& v) {
  const v8f t = v.lo + v.hi;
  const v4f u = __builtin_shufflevector(t, t, 0, 1, 2, 3) + __builtin_shufflevector(t, t, 4, 5, 6, 7);
  const v4f w = u + __builtin_shufflevector(u, u, 2, 3, 2, 3);  // u0 + u2, u1 + u3
  return w[0] + w[1];
}
// Max over the lanes, NaN lanes skipped (floor 0: the lanes hold absolute values).
__attribute__((always_inline)) inline float fold16_max(const Lanes16& v) {
  const v8f lo = v.lo == v.lo ? v.lo : v8f{}, hi = v.hi == v.hi ? v.hi : v8f{};
  const v8f t = hi > lo ? hi : lo;
  const v4f a = __builtin_shufflevector(t, t, 0, 1, 2, 3), b = __builtin_shufflevector(t, t, 4, 5, 6, 7);
  const v4f u = b > a ? b : a;
  const v4f c = __builtin_shufflevector(u, u, 2, 3, 0, 1);
  const v4f w = c > u ? c : u;
  const float m = w[1] > w[0] ? w[1] : w[0];
  return m > 0 ? m : 0.0f;
}

// The float partial sums of the current block, lane by lane: small enough for registers.
struct BlockLanes {
  Lanes16 err, ref, hat, dot, max;
  unsigned pos = 0;  // elements of the block summed
  static constexpr unsigned kBlock = 256;

  // Eight elements into the lanes of one half (lo: lanes 0-7, hi: 8-15).
  static void add_half(v8f& err, v8f& ref, v8f& hat, v8f& dot, v8f& max, const v8f& x, const v8f& y) {
    const v8f d = x - y;
    err += d * d;
    ref += x * x;
    hat += y * y;
    dot += x * y;
    const v8f a = reinterpret_cast<v8f>(reinterpret_cast<v8i>(d) & 0x7fffffff);
    max = a > max ? a : max;
  }
  // Sixteen elements: x0 / y0 are elements 0-7 of the chunk, x1 / y1 elements 8-15.
  void add16(const v8f& x0, const v8f& x1, const v8f& y0, const v8f& y1) {
    add_half(err.lo, ref.lo, hat.lo, dot.lo, max.lo, x0, y0);
    add_half(err.hi, ref.hi, hat.hi, dot.hi, max.hi, x1, y1);
    pos += 16;
  }
  bool full() const { return pos == kBlock; }
  // The block's sums into `out` (in double).
  __attribute__((always_inline)) void close(ErrorSums* out) const {
    out->err2 += fold16_sum(err);
    out->ref2 += fold16_sum(ref);
    out->hat2 += fold16_sum(hat);
    out->dot += fold16_sum(dot);
    const double m = fold16_max(max);
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
  // take it, add whole 16-element chunks, close() it into out() whenever full(), give it back.
  BlockLanes& block() { return b_; }
  unsigned pending() const { return npend_; }

  void add16(const float* x, const float* y) {
    b_.add16(load8(x), load8(x + 8), load8(y), load8(y + 8));
    if (b_.full()) b_.close(out_), b_ = BlockLanes{};
  }
  // The next element: held until it completes a chunk of 16.
  void add1(float x, float y) {
    px_[npend_] = x, py_[npend_] = y;
    if (++npend_ == 16) {
      npend_ = 0;
      add16(px_, py_);
    }
  }
  void add(const float* x, const float* y, size_t n) {
    size_t i = 0;
    for (; i < n && npend_ != 0; ++i) add1(x[i], y[i]);
    for (; i + 16 <= n; i += 16) add16(x + i, y + i);
    for (; i < n; ++i) add1(x[i], y[i]);
  }
  // The end of the tensor: pending elements go to lane 0, and a partly filled block is added.
  void finish() {
    for (unsigned i = 0; i < npend_; ++i) {
      const float d = px_[i] - py_[i], a = __builtin_fabsf(d);
      b_.err.lo[0] += d * d;
      b_.ref.lo[0] += px_[i] * px_[i];
      b_.hat.lo[0] += py_[i] * py_[i];
      b_.dot.lo[0] += px_[i] * py_[i];
      b_.max.lo[0] = a > b_.max.lo[0] ? a : b_.max.lo[0];
    }
    b_.pos += npend_;
    npend_ = 0;
    if (b_.pos > 0) b_.close(out_), b_ = BlockLanes{};
  }

 private:
  ErrorSums* out_;
  BlockLanes b_;
  unsigned npend_ = 0;  // single elements held
  float px_[16], py_[16];
};

}  // namespace kvscope

#pragma GCC diagnostic pop
