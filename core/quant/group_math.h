#pragma once
// Internal to core/quant: the per-group arithmetic shared by quantize_tensor (f32 input) and the
// streaming group kernels (f16/bf16/f32 input, core/quant/group_kernels.h). One copy of every
// formula, so both paths produce the same bits (ALGORITHMS.md §1).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/policy/policy.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/dtype.h"
#include "core/tensor/dtype_branchless.h"

namespace kvscope::group_math {

enum class Mode { Sym, SymInverse, AsymFloat, AsymInt };

inline Mode mode_of(const TensorQuant& q) {
  if (q.symmetric) return q.inverse_scale ? Mode::SymInverse : Mode::Sym;
  return q.integer_zero_point ? Mode::AsymInt : Mode::AsymFloat;
}

inline int qmax_of(const TensorQuant& q) { return q.symmetric ? (1 << (q.bits - 1)) - 1 : (1 << q.bits) - 1; }

inline float round_meta(float v, DType t) {
  switch (t) {
    case DType::F16: return round_to_f16(v);
    case DType::BF16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}

struct Params {
  float s = 1, z = 0;  // scale (or inverse scale), zero point (float min or integer zp)
};

// Scale and zero point of a group with range [mn, mx] at clip ratio alpha (§1.2, §1.3 of ALGORITHMS.md).
inline Params params_from_range(float mn, float mx, const TensorQuant& q, Mode mode, int qmax, float alpha) {
  Params p;
  switch (mode) {
    case Mode::Sym: {
      float a = alpha * std::max(std::fabs(mn), std::fabs(mx));
      p.s = round_meta(a / static_cast<float>(qmax), q.scale_dtype);
      if (!(p.s > 0) || !std::isfinite(p.s)) p.s = 1;  // all-zero group: codes 0
      break;
    }
    case Mode::SymInverse: {
      float a = alpha * std::max(std::fabs(mn), std::fabs(mx));
      p.s = a > 0 ? round_meta(static_cast<float>(qmax) / a, q.scale_dtype) : 1.0f;
      if (!(p.s > 0) || !std::isfinite(p.s)) p.s = 1;
      break;
    }
    case Mode::AsymFloat: {
      float lo = alpha * mn, hi = alpha * mx;
      p.s = round_meta((hi - lo) / static_cast<float>(qmax), q.scale_dtype);
      p.z = round_meta(lo, q.scale_dtype);
      if (!(p.s > 0) || !std::isfinite(p.s)) p.s = 1;  // constant group: codes 0, x^ = lo
      break;
    }
    case Mode::AsymInt: {
      float lo = alpha * mn, hi = alpha * mx;
      p.s = round_meta((hi - lo) / static_cast<float>(qmax), q.scale_dtype);
      if (!(p.s > 0) || !std::isfinite(p.s)) p.s = 1;
      float z = std::nearbyint(-lo / p.s);
      p.z = std::min(std::max(z, 0.0f), static_cast<float>(qmax));
      break;
    }
  }
  return p;
}

// ---- Branch-free forms for loops over many groups (they vectorize); equal to the above (tested) ----

template <DType T>
inline float round_meta_t(float v) {
  if constexpr (T == DType::F16) return round_f16_value(v);
  else if constexpr (T == DType::BF16) return round_bf16_value(v);
  else return v;
}

// params_from_range for scale type T with selects instead of branches; fq = qmax.
template <Mode M, DType T>
inline void params_nb(float mn, float mx, float alpha, float fq, float* s_out, float* z_out) {
  float s, z = 0;
  if constexpr (M == Mode::Sym || M == Mode::SymInverse) {
    const float a = alpha * std::max(std::fabs(mn), std::fabs(mx));
    if constexpr (M == Mode::Sym) s = round_meta_t<T>(a / fq);
    else s = a > 0 ? round_meta_t<T>(fq / a) : 1.0f;
  } else {
    const float lo = alpha * mn, hi = alpha * mx;
    s = round_meta_t<T>((hi - lo) / fq);
    if constexpr (M == Mode::AsymFloat) z = round_meta_t<T>(lo);
  }
  s = (s > 0 && s <= 3.40282347e+38f) ? s : 1.0f;  // !(s > 0) || !isfinite(s): 1
  if constexpr (M == Mode::AsymInt) {
    const float lo = alpha * mn;
    z = std::nearbyint(-lo / s);
    z = std::min(std::max(z, 0.0f), fq);
  }
  *s_out = s;
  *z_out = z;
}

// Encodes one element to its unsigned code and reconstruction. Clamping before rounding gives
// the same code as after because the bounds are integers; it also maps NaN to the lowest code.
template <Mode M>
inline uint8_t encode(float x, float s, float z, float qmax, float* y) {
  // Integer zero point: round x/s first and add z after (rint(x/s + z) would round the sum).
  float v, lo, hi;
  if constexpr (M == Mode::Sym) v = x / s, lo = -qmax, hi = qmax;
  else if constexpr (M == Mode::SymInverse) v = x * s, lo = -qmax, hi = qmax;
  else if constexpr (M == Mode::AsymFloat) v = (x - z) / s, lo = 0, hi = qmax;
  else v = x / s, lo = -z, hi = qmax - z;
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  float q = rint_small(v);
  if constexpr (M == Mode::Sym) *y = q * s;
  else if constexpr (M == Mode::SymInverse) *y = q / s;
  else if constexpr (M == Mode::AsymFloat) *y = q * s + z;
  else *y = q * s;
  if constexpr (M == Mode::Sym || M == Mode::SymInverse) return static_cast<uint8_t>(static_cast<int>(q + qmax));
  else if constexpr (M == Mode::AsymFloat) return static_cast<uint8_t>(static_cast<int>(q));
  else return static_cast<uint8_t>(static_cast<int>(q + z));
}

template <Mode M>
inline float decode(uint8_t code, float s, float z, float qmax) {
  float lo = (M == Mode::Sym || M == Mode::SymInverse) ? -qmax : 0.0f;
  float q = static_cast<float>(code) + lo;
  if constexpr (M == Mode::Sym) return q * s;
  else if constexpr (M == Mode::SymInverse) return q / s;
  else if constexpr (M == Mode::AsymFloat) return q * s + z;
  else return (q - z) * s;
}

// Strided view of one group's values (tokens of a channel are `stride` apart).
struct GroupView {
  const float* p;
  int64_t n, stride;
  float operator[](int64_t i) const { return p[i * stride]; }
};

// Clip ratio for a group: fixed, or the arg-min of the group's reconstruction MSE over the grid
// {1, 1-step, ..., clip_min} (ties keep the larger alpha) (§1.4).
template <Mode M>
inline Params choose_params(const GroupView& g, float mn, float mx, const TensorQuant& q, int qmax) {
  if (!q.clip_search) return params_from_range(mn, mx, q, M, qmax, static_cast<float>(q.clip_ratio));
  Params best;
  double best_err = INFINITY;
  int steps = static_cast<int>(std::floor((1.0 - q.clip_min) / q.clip_step + 1e-9));
  for (int k = 0; k <= steps; ++k) {
    float alpha = static_cast<float>(1.0 - k * q.clip_step);
    Params p = params_from_range(mn, mx, q, M, qmax, alpha);
    double err = 0;
    for (int64_t i = 0; i < g.n; ++i) {
      float y;
      encode<M>(g[i], p.s, p.z, static_cast<float>(qmax), &y);
      double d = static_cast<double>(g[i]) - y;
      err += d * d;
    }
    if (err < best_err) {
      best_err = err;
      best = p;
    }
  }
  return best;
}

inline void range_of(const GroupView& g, float* mn, float* mx) {
  float a = INFINITY, b = -INFINITY;
  if (g.stride == 1) {
    const float* p = g.p;
#pragma omp simd reduction(min : a) reduction(max : b)
    for (int64_t i = 0; i < g.n; ++i) {
      a = std::min(a, p[i]);
      b = std::max(b, p[i]);
    }
  } else {
    for (int64_t i = 0; i < g.n; ++i) {
      a = std::min(a, g[i]);
      b = std::max(b, g[i]);
    }
  }
  *mn = a;
  *mx = b;
}

}  // namespace kvscope::group_math
