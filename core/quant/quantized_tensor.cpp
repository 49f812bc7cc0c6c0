#include "core/quant/quantized_tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/quant/group_kernels.h"
#include "core/quant/group_math.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

using namespace group_math;

template <Mode M>
__attribute__((target_clones("avx2", "default"))) void decode_row(const uint8_t* codes, const float* sc,
                                                                   const float* zc, int n, float qmax, float* out) {
  for (int i = 0; i < n; ++i) out[i] = decode<M>(codes[i], sc[i], zc[i], qmax);
}

template <Mode M>
__attribute__((target_clones("avx2", "default"))) void decode_span(const uint8_t* codes, int n, float s, float z,
                                                                    float qmax, float* out) {
  for (int i = 0; i < n; ++i) out[i] = decode<M>(codes[i], s, z, qmax);
}

size_t group_count(const QuantizedTensor& t) {
  int rq = t.quantized_rows();
  if (rq <= 0) return 0;
  switch (t.spec.axis) {
    case Axis::Token: return static_cast<size_t>(rq) * ((t.cols + t.group_len - 1) / t.group_len);
    case Axis::Channel: return static_cast<size_t>(t.cols) * ((rq + t.group_len - 1) / t.group_len);
    case Axis::Head: return 1;
  }
  return 0;
}

// Expands the group parameters that apply to quantized row r into per-column arrays.
void column_params(const QuantizedTensor& t, int r, float* sc, float* zc) {
  const int D = t.cols, g = t.group_len;
  const bool has_z = !t.zeros.empty();
  switch (t.spec.axis) {
    case Axis::Token: {
      size_t per_row = (D + g - 1) / g;
      for (int c = 0; c < D; ++c) {
        size_t gi = r * per_row + c / g;
        sc[c] = t.scales[gi];
        zc[c] = has_z ? t.zeros[gi] : 0.0f;
      }
      break;
    }
    case Axis::Channel: {
      size_t base = static_cast<size_t>(r / g) * D;
      std::memcpy(sc, &t.scales[base], D * sizeof(float));
      if (has_z) std::memcpy(zc, &t.zeros[base], D * sizeof(float));
      else std::fill(zc, zc + D, 0.0f);
      break;
    }
    case Axis::Head:
      std::fill(sc, sc + D, t.scales[0]);
      std::fill(zc, zc + D, has_z ? t.zeros[0] : 0.0f);
      break;
  }
}

QuantizedTensor prepare(const float* x, int rows, int cols, const TensorQuant& spec, int fp_head, int fp_tail) {
  std::string problem = check_tensor_quant(spec);
  if (!problem.empty()) throw Error("quantizer: " + problem);
  if (rows < 0 || cols <= 0 || fp_head < 0 || fp_tail < 0 || fp_head + fp_tail > rows)
    throw Error("quantizer: invalid matrix or full-precision row counts");
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.spec = spec;
  t.fp_head = spec.full_precision ? rows : fp_head;
  t.fp_tail = spec.full_precision ? 0 : fp_tail;
  t.group_len = resolved_group_len(spec, t.quantized_rows(), cols);
  // Kept rows in fp16.
  t.fp16_rows.resize(static_cast<size_t>(t.fp_head + t.fp_tail) * cols);
  convert_from_f32(DType::F16, x, static_cast<size_t>(t.fp_head) * cols, t.fp16_rows.data());
  convert_from_f32(DType::F16, x + static_cast<size_t>(rows - t.fp_tail) * cols, static_cast<size_t>(t.fp_tail) * cols,
                   t.fp16_rows.data() + static_cast<size_t>(t.fp_head) * cols);
  size_t ng = group_count(t);
  t.scales.resize(ng);
  if (!spec.symmetric) t.zeros.resize(ng);
  return t;
}

template <Mode M>
void dequantize_fast(const QuantizedTensor& t, float* out) {
  const int D = t.cols, g = t.group_len, rq = t.quantized_rows();
  const float qmax = static_cast<float>(qmax_of(t.spec));
  std::vector<uint8_t> codes(static_cast<size_t>(rq) * D);
  unpack_codes(t.codes.data(), 0, codes.size(), t.spec.bits, codes.data());
  float* oq = out + static_cast<size_t>(t.fp_head) * D;
  if (t.spec.axis == Axis::Token) {
    const bool has_z = !t.zeros.empty();
    size_t gi = 0;
    for (int r = 0; r < rq; ++r)
      for (int c0 = 0; c0 < D; c0 += g, ++gi) {
        const size_t off = static_cast<size_t>(r) * D + c0;
        decode_span<M>(codes.data() + off, std::min(g, D - c0), t.scales[gi], has_z ? t.zeros[gi] : 0.0f, qmax, oq + off);
      }
    return;
  }
  std::vector<float> sc(D), zc(D);
  for (int r = 0; r < rq; ++r) {
    if (r == 0 || t.spec.axis == Axis::Token || (t.spec.axis == Axis::Channel && r % g == 0))
      column_params(t, r, sc.data(), zc.data());
    decode_row<M>(codes.data() + static_cast<size_t>(r) * D, sc.data(), zc.data(), D, qmax, oq + static_cast<size_t>(r) * D);
  }
}

}  // namespace

std::string check_tensor_quant(const TensorQuant& q) {
  if (q.full_precision) return "";
  if (q.bits < 1 || q.bits > 8) return "bits must be an integer in 1..8";
  if (q.symmetric && q.bits < 2) return "symmetric quantization needs at least 2 bits";
  if (q.group_size < 0) return "group_size must be >= 0 (0 = the whole axis)";
  if (!(q.clip_ratio > 0 && q.clip_ratio <= 1)) return "clip_ratio must be in (0, 1]";
  if (q.clip_search && !(q.clip_min > 0 && q.clip_min <= 1 && q.clip_step > 0)) return "clip search needs 0 < clip_min <= 1 and clip_step > 0";
  if (q.scale_dtype != DType::F16 && q.scale_dtype != DType::BF16 && q.scale_dtype != DType::F32) return "scale_dtype must be f16, bf16 or f32";
  if (q.inverse_scale && !q.symmetric) return "inverse_scale is only defined for symmetric quantization";
  if (q.integer_zero_point && q.symmetric) return "zero_point 'integer' needs asymmetric quantization";
  return "";
}

int resolved_group_len(const TensorQuant& spec, int quantized_rows, int cols) {
  switch (spec.axis) {
    case Axis::Token: return spec.group_size > 0 ? std::min(spec.group_size, cols) : cols;
    case Axis::Channel: return spec.group_size > 0 ? spec.group_size : std::max(1, quantized_rows);
    case Axis::Head: return std::max(1, quantized_rows) * cols;
  }
  return cols;
}

namespace {

// Whole bytes of PER codes each (bits = 8 / PER): one output byte per iteration, vectorizes.
template <int PER>
void pack_whole(const uint8_t* codes, size_t nbytes, uint8_t* out) {
  constexpr int B = 8 / PER;
  for (size_t b = 0; b < nbytes; ++b) {
    unsigned v = 0;
    for (int k = 0; k < PER; ++k) v |= static_cast<unsigned>(codes[b * PER + k]) << (k * B);
    out[b] = static_cast<uint8_t>(v);
  }
}

template <int PER>
void unpack_whole(const uint8_t* packed, size_t nbytes, uint8_t* out) {
  constexpr int B = 8 / PER;
  constexpr unsigned mask = (1u << B) - 1;
  for (size_t b = 0; b < nbytes; ++b)
    for (int k = 0; k < PER; ++k) out[b * PER + k] = static_cast<uint8_t>((packed[b] >> (k * B)) & mask);
}

}  // namespace

void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out, codes, n);
    return;
  }
  if (8 % bits == 0) {  // 1, 2, 4 bits: whole codes per byte
    const size_t per = 8 / bits, full = n / per;
    if (per == 2) pack_whole<2>(codes, full, out);
    else if (per == 4) pack_whole<4>(codes, full, out);
    else pack_whole<8>(codes, full, out);
    if (full * per < n) out[full] = 0;  // the partial last byte (whole bytes were written)
    for (size_t i = full * per; i < n; ++i) out[i / per] |= static_cast<uint8_t>(codes[i] << ((i % per) * bits));
    return;
  }
  std::memset(out, 0, packed_bytes(n, bits));
  uint64_t acc = 0;
  int nacc = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; ++i) {
    acc |= static_cast<uint64_t>(codes[i]) << nacc;
    nacc += bits;
    while (nacc >= 8) {
      out[o++] = static_cast<uint8_t>(acc);
      acc >>= 8;
      nacc -= 8;
    }
  }
  if (nacc > 0) out[o] = static_cast<uint8_t>(acc);
}

void unpack_codes(const uint8_t* packed, size_t first, size_t n, int bits, uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out, packed + first, n);
    return;
  }
  const uint8_t mask = static_cast<uint8_t>((1u << bits) - 1);
  if (8 % bits == 0) {
    const size_t per = 8 / bits;
    size_t i = 0;
    if (first % per == 0) {  // byte-aligned run: whole bytes at a time
      const size_t full = n / per;
      if (per == 2) unpack_whole<2>(packed + first / per, full, out);
      else if (per == 4) unpack_whole<4>(packed + first / per, full, out);
      else unpack_whole<8>(packed + first / per, full, out);
      i = full * per;
    }
    for (; i < n; ++i) {
      size_t j = first + i;
      out[i] = (packed[j / per] >> ((j % per) * bits)) & mask;
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    size_t bit = (first + i) * bits;
    size_t byte = bit / 8;
    unsigned shift = bit % 8;
    unsigned v = packed[byte] >> shift;
    if (shift + bits > 8) v |= static_cast<unsigned>(packed[byte + 1]) << (8 - shift);
    out[i] = static_cast<uint8_t>(v & mask);
  }
}

uint64_t QuantizedTensor::code_bits() const {
  return static_cast<uint64_t>(quantized_rows() > 0 ? quantized_rows() : 0) * cols * spec.bits;
}

uint64_t QuantizedTensor::meta_bits() const {
  uint64_t per = dtype_size(spec.scale_dtype) * 8;
  uint64_t zp_bits = spec.symmetric ? 0 : (spec.integer_zero_point ? static_cast<uint64_t>(spec.bits) : per);
  return scales.size() * (per + zp_bits);
}

uint64_t QuantizedTensor::fp_bits() const { return static_cast<uint64_t>(fp_head + fp_tail) * cols * 16; }

uint64_t QuantizedTensor::static_bits() const {
  if (quantized_rows() <= 0) return 0;
  bool whole_sequence = spec.axis == Axis::Head || (spec.axis == Axis::Channel && spec.group_size == 0);
  return whole_sequence ? meta_bits() : 0;
}

void QuantizedTensor::dequantize(float* out) const {
  convert_to_f32(DType::F16, fp16_rows.data(), static_cast<size_t>(fp_head) * cols, out);
  convert_to_f32(DType::F16, fp16_rows.data() + static_cast<size_t>(fp_head) * cols, static_cast<size_t>(fp_tail) * cols,
                 out + static_cast<size_t>(rows - fp_tail) * cols);
  if (quantized_rows() <= 0) return;
  switch (mode_of(spec)) {
    case Mode::Sym: dequantize_fast<Mode::Sym>(*this, out); break;
    case Mode::SymInverse: dequantize_fast<Mode::SymInverse>(*this, out); break;
    case Mode::AsymFloat: dequantize_fast<Mode::AsymFloat>(*this, out); break;
    case Mode::AsymInt: dequantize_fast<Mode::AsymInt>(*this, out); break;
  }
}

int QuantizedTensor::code_at(int row, int col) const {
  int r = row - fp_head;
  if (r < 0 || r >= quantized_rows()) throw Error("code_at: row is not quantized");
  size_t bit = (static_cast<size_t>(r) * cols + col) * spec.bits;
  unsigned v = codes[bit / 8] >> (bit % 8);
  if (bit % 8 + spec.bits > 8) v |= static_cast<unsigned>(codes[bit / 8 + 1]) << (8 - bit % 8);
  int c = static_cast<int>(v & ((1u << spec.bits) - 1));
  return spec.symmetric ? c - qmax_of(spec) : c;
}

QuantizedTensor quantize_tensor(const float* x, int rows, int cols, const TensorQuant& spec, int fp_head, int fp_tail,
                                float* recon) {
  // One kernel for f32 and stored f16/bf16 input (core/quant/group_kernels.cpp).
  return quantize_stored(StoredMatrix{x, DType::F32, rows, cols}, spec, fp_head, fp_tail, nullptr, recon);
}

// ---- Reference: one group at a time, straight from the formulas, std::nearbyint ----

QuantizedTensor quantize_tensor_reference(const float* x, int rows, int cols, const TensorQuant& spec, int fp_head,
                                          int fp_tail) {
  QuantizedTensor t = prepare(x, rows, cols, spec, fp_head, fp_tail);
  const int rq = t.quantized_rows(), D = cols, g = t.group_len, qmax = qmax_of(spec);
  if (rq <= 0) return t;
  const Mode mode = mode_of(spec);
  std::vector<uint8_t> codes(static_cast<size_t>(rq) * D);
  // Element lists of every group, in group order.
  std::vector<std::vector<size_t>> groups;
  if (spec.axis == Axis::Token) {
    for (int r = 0; r < rq; ++r)
      for (int c0 = 0; c0 < D; c0 += g) {
        groups.emplace_back();
        for (int c = c0; c < std::min(D, c0 + g); ++c) groups.back().push_back(static_cast<size_t>(r) * D + c);
      }
  } else if (spec.axis == Axis::Channel) {
    for (int r0 = 0; r0 < rq; r0 += g)
      for (int c = 0; c < D; ++c) {
        groups.emplace_back();
        for (int r = r0; r < std::min(rq, r0 + g); ++r) groups.back().push_back(static_cast<size_t>(r) * D + c);
      }
  } else {
    groups.emplace_back();
    for (size_t i = 0; i < codes.size(); ++i) groups.back().push_back(i);
  }
  const float* xq = x + static_cast<size_t>(t.fp_head) * D;
  auto code_of = [&](float v, const Params& p, float* y) {
    double q;
    if (mode == Mode::Sym) q = std::nearbyint(v / p.s);
    else if (mode == Mode::SymInverse) q = std::nearbyint(v * p.s);
    else if (mode == Mode::AsymFloat) q = std::nearbyint((v - p.z) / p.s);
    else q = std::nearbyint(v / p.s) + p.z;
    double lo = spec.symmetric ? -qmax : 0;
    q = std::min(std::max(q, lo), static_cast<double>(qmax));
    float qf = static_cast<float>(q);
    if (mode == Mode::Sym) *y = qf * p.s;
    else if (mode == Mode::SymInverse) *y = qf / p.s;
    else if (mode == Mode::AsymFloat) *y = qf * p.s + p.z;
    else *y = (qf - p.z) * p.s;
    return static_cast<uint8_t>(q - lo);
  };
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    float mn = INFINITY, mx = -INFINITY;
    for (size_t i : groups[gi]) mn = std::min(mn, xq[i]), mx = std::max(mx, xq[i]);
    Params best = params_from_range(mn, mx, spec, mode, qmax, static_cast<float>(spec.clip_ratio));
    if (spec.clip_search) {
      double best_err = INFINITY;
      int steps = static_cast<int>(std::floor((1.0 - spec.clip_min) / spec.clip_step + 1e-9));
      for (int k = 0; k <= steps; ++k) {
        Params p = params_from_range(mn, mx, spec, mode, qmax, static_cast<float>(1.0 - k * spec.clip_step));
        double err = 0;
        for (size_t i : groups[gi]) {
          float y;
          code_of(xq[i], p, &y);
          err += (static_cast<double>(xq[i]) - y) * (static_cast<double>(xq[i]) - y);
        }
        if (err < best_err) best_err = err, best = p;
      }
    }
    t.scales[gi] = best.s;
    if (!t.zeros.empty()) t.zeros[gi] = best.z;
    for (size_t i : groups[gi]) {
      float y;
      codes[i] = code_of(xq[i], best, &y);
    }
  }
  t.codes.resize(packed_bytes(codes.size(), spec.bits));
  pack_codes(codes.data(), codes.size(), spec.bits, t.codes.data());
  return t;
}

}  // namespace kvscope
