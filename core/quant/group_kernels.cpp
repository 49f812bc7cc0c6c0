#include "core/quant/group_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/quant/group_math.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

namespace {

using namespace group_math;

// Error sums fed in pieces of any length, equal to one ErrorSums::add over their concatenation
// (which sums in float over 256-element blocks counted from the start, then in double).
class ErrorStream {
 public:
  explicit ErrorStream(ErrorSums* out) : out_(out) {}
  void push(const float* x, const float* y, size_t n) {
    if (!out_) return;
    while (n > 0) {
      if (fill_ == 0 && n >= kBlock) {  // whole blocks straight from the caller's buffers
        const size_t m = n / kBlock * kBlock;
        out_->add(x, y, m);
        x += m, y += m, n -= m;
        continue;
      }
      const size_t m = std::min(n, kBlock - fill_);
      std::memcpy(xb_ + fill_, x, m * sizeof(float));
      std::memcpy(yb_ + fill_, y, m * sizeof(float));
      fill_ += m, x += m, y += m, n -= m;
      if (fill_ == kBlock) flush();
    }
  }
  void flush() {
    if (out_ && fill_) out_->add(xb_, yb_, fill_);
    fill_ = 0;
  }

 private:
  static constexpr size_t kBlock = 256;  // ErrorSums::add's block
  ErrorSums* out_;
  size_t fill_ = 0;
  float xb_[kBlock], yb_[kBlock];
};

struct Scratch {
  std::vector<float> x, y, sc, zc, mn, mx;
  std::vector<uint8_t> codes;
};

// Rows per tile of the token axis and of the passes over long groups: a few thousand elements.
int tile_rows(int cols) { return std::max(1, 4096 / cols); }
// Channel groups up to this many elements are converted once and quantized from the tile.
constexpr size_t kMaxGroupTile = 1 << 16;

// Writes n codes at element index `first` of a zero-initialised packed stream.
void put_codes(const uint8_t* codes, size_t n, int bits, uint8_t* out, size_t first) {
  size_t i = 0;
  for (; i < n && ((first + i) * bits) % 8 != 0; ++i) {  // at most 7 codes up to a byte boundary
    const size_t bit = (first + i) * bits;
    const unsigned v = static_cast<unsigned>(codes[i]) << (bit % 8);
    out[bit / 8] |= static_cast<uint8_t>(v);
    if (bit % 8 + bits > 8) out[bit / 8 + 1] |= static_cast<uint8_t>(v >> 8);
  }
  if (i < n) pack_codes(codes + i, n - i, bits, out + (first + i) * bits / 8);
}

// Per-token groups of `rows` rows: range, parameters and codes group by group (as quantize_tensor).
template <Mode M>
__attribute__((target_clones("avx2", "default"))) void token_tile(const float* x, int rows, int D, int g,
                                                                   const TensorQuant& q, int qmax, float* scales,
                                                                   float* zeros, uint8_t* codes, float* y) {
  const float fq = static_cast<float>(qmax);
  size_t gi = 0;
  for (int r = 0; r < rows; ++r)
    for (int c0 = 0; c0 < D; c0 += g, ++gi) {
      const size_t off = static_cast<size_t>(r) * D + c0;
      const int n = std::min(g, D - c0);
      GroupView v{x + off, n, 1};
      float mn, mx;
      range_of(v, &mn, &mx);
      const Params p = choose_params<M>(v, mn, mx, q, qmax);
      scales[gi] = p.s;
      if (zeros) zeros[gi] = p.z;
      const float* xo = x + off;
      uint8_t* co = codes + off;
      float* yo = y + off;
      for (int i = 0; i < n; ++i) co[i] = encode<M>(xo[i], p.s, p.z, fq, &yo[i]);
    }
}

// Column-wise min / max folded over `rows` rows, in row order (as quantize_tensor).
__attribute__((target_clones("avx2", "default"))) void fold_range(const float* x, int rows, int D, float* mn, float* mx) {
  for (int r = 0; r < rows; ++r) {
    const float* row = x + static_cast<size_t>(r) * D;
    for (int c = 0; c < D; ++c) {
      mn[c] = std::min(mn[c], row[c]);
      mx[c] = std::max(mx[c], row[c]);
    }
  }
}

// Rows with per-column parameters.
template <Mode M>
__attribute__((target_clones("avx2", "default"))) void encode_rows(const float* x, int rows, int D, const float* sc,
                                                                    const float* zc, float qmax, uint8_t* codes, float* y) {
  for (int r = 0; r < rows; ++r) {
    const size_t o = static_cast<size_t>(r) * D;
    const float* xr = x + o;
    uint8_t* cr = codes + o;
    float* yr = y + o;
    for (int c = 0; c < D; ++c) cr[c] = encode<M>(xr[c], sc[c], zc[c], qmax, &yr[c]);
  }
}

// Rows [r0, r0 + n) of X as f32: a pointer into X when it is aligned f32, else converted into buf.
const float* load_rows(const StoredMatrix& X, int r0, int n, std::vector<float>& buf) {
  const size_t count = static_cast<size_t>(n) * X.cols;
  const unsigned char* p = X.row_ptr(r0);
  if (X.dtype == DType::F32 && reinterpret_cast<uintptr_t>(p) % alignof(float) == 0) return reinterpret_cast<const float*>(p);
  if (buf.size() < count) buf.resize(count);
  stored_to_f32(X.dtype, p, count, buf.data());
  return buf.data();
}

float* out_rows(float* recon, int r0, int D, std::vector<float>& buf, size_t count) {
  if (recon) return recon + static_cast<size_t>(r0) * D;
  if (buf.size() < count) buf.resize(count);
  return buf.data();
}

class Kernel {
 public:
  Kernel(const StoredMatrix& X, QuantizedTensor& t, ErrorStream& es, float* recon, Scratch& s)
      : X_(X), t_(t), es_(es), recon_(recon), s_(s), D_(X.cols) {}

  // Kept rows [r0, r1) of the matrix: fp16 bits at fp16_rows[dst_row], reconstruction as the decoder sees it.
  void fp_rows(int r0, int r1, int dst_row) {
    for (int r = r0; r < r1; r += tile_rows(D_)) {
      const int n = std::min(tile_rows(D_), r1 - r);
      const size_t count = static_cast<size_t>(n) * D_;
      const float* x = load_rows(X_, r, n, s_.x);
      uint16_t* bits = t_.fp16_rows.data() + static_cast<size_t>(dst_row + r - r0) * D_;
      convert_from_f32(DType::F16, x, count, bits);
      float* y = out_rows(recon_, r, D_, s_.y, count);
      convert_to_f32(DType::F16, bits, count, y);
      es_.push(x, y, count);
    }
  }

  template <Mode M>
  void quantized_rows() {
    const int rq = t_.quantized_rows(), g = t_.group_len, h = t_.fp_head;
    const int qmax = qmax_of(t_.spec);
    float* zeros = t_.zeros.empty() ? nullptr : t_.zeros.data();
    switch (t_.spec.axis) {
      case Axis::Token: {
        const size_t per_row = (D_ + g - 1) / g;
        for (int r0 = 0; r0 < rq; r0 += tile_rows(D_)) {
          const int n = std::min(tile_rows(D_), rq - r0);
          const size_t count = static_cast<size_t>(n) * D_, gi = r0 * per_row;
          const float* x = load_rows(X_, h + r0, n, s_.x);
          float* y = out_rows(recon_, h + r0, D_, s_.y, count);
          codes_room(count);
          token_tile<M>(x, n, D_, g, t_.spec, qmax, t_.scales.data() + gi, zeros ? zeros + gi : nullptr, s_.codes.data(), y);
          emit(x, y, count, static_cast<size_t>(r0) * D_);
        }
        return;
      }
      case Axis::Channel:
        for (int r0 = 0, b = 0; r0 < rq; r0 += g, ++b) {
          const int n = std::min(g, rq - r0);
          float* sc = t_.scales.data() + static_cast<size_t>(b) * D_;
          float* zc = zeros ? zeros + static_cast<size_t>(b) * D_ : nullptr;
          if (static_cast<size_t>(n) * D_ <= kMaxGroupTile) {  // one tile: convert once
            const float* x = load_rows(X_, h + r0, n, s_.x);
            reset_range();
            fold_range(x, n, D_, s_.mn.data(), s_.mx.data());
            for (int c = 0; c < D_; ++c) {
              const Params p = choose_params<M>(GroupView{x + c, n, D_}, s_.mn[c], s_.mx[c], t_.spec, qmax);
              set_column(c, p, sc, zc);
            }
            encode_span_of_rows<M>(x, r0, n);
          } else {  // a long group: a range pass, then an encoding pass (no clip search here)
            reset_range();
            for (int r = r0; r < r0 + n; r += tile_rows(D_)) {
              const int m = std::min(tile_rows(D_), r0 + n - r);
              fold_range(load_rows(X_, h + r, m, s_.x), m, D_, s_.mn.data(), s_.mx.data());
            }
            for (int c = 0; c < D_; ++c)
              set_column(c, params_from_range(s_.mn[c], s_.mx[c], t_.spec, M, qmax, static_cast<float>(t_.spec.clip_ratio)), sc, zc);
            encode_pass<M>(r0, n);
          }
        }
        return;
      case Axis::Head: {  // one group: a range pass, then an encoding pass (no clip search here)
        float a = INFINITY, b = -INFINITY;
        for (int r = 0; r < rq; r += tile_rows(D_)) {
          const int m = std::min(tile_rows(D_), rq - r);
          float mn, mx;
          range_of(GroupView{load_rows(X_, h + r, m, s_.x), static_cast<int64_t>(m) * D_, 1}, &mn, &mx);
          a = std::min(a, mn);
          b = std::max(b, mx);
        }
        const Params p = params_from_range(a, b, t_.spec, M, qmax, static_cast<float>(t_.spec.clip_ratio));
        t_.scales[0] = p.s;
        if (zeros) zeros[0] = p.z;
        room(s_.sc, D_);
        room(s_.zc, D_);
        std::fill_n(s_.sc.data(), D_, p.s);
        std::fill_n(s_.zc.data(), D_, zeros ? p.z : 0.0f);
        encode_pass<M>(0, rq);
        return;
      }
    }
  }

 private:
  static void room(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }
  void codes_room(size_t n) {
    if (s_.codes.size() < n) s_.codes.resize(n);
  }
  void reset_range() {
    room(s_.mn, D_);
    room(s_.mx, D_);
    std::fill_n(s_.mn.data(), D_, INFINITY);
    std::fill_n(s_.mx.data(), D_, -INFINITY);
  }
  // Column c's parameters into the stored arrays and the per-column expansion used to encode.
  void set_column(int c, const Params& p, float* sc, float* zc) {
    room(s_.sc, D_);
    room(s_.zc, D_);
    sc[c] = p.s;
    if (zc) zc[c] = p.z;
    s_.sc[c] = p.s;
    s_.zc[c] = zc ? p.z : 0.0f;
  }
  // Codes of quantized rows [r0, r0 + n) held in x, with the per-column parameters in s_.sc / s_.zc.
  template <Mode M>
  void encode_span_of_rows(const float* x, int r0, int n) {
    const size_t count = static_cast<size_t>(n) * D_;
    float* y = out_rows(recon_, t_.fp_head + r0, D_, s_.y, count);
    codes_room(count);
    encode_rows<M>(x, n, D_, s_.sc.data(), s_.zc.data(), static_cast<float>(qmax_of(t_.spec)), s_.codes.data(), y);
    emit(x, y, count, static_cast<size_t>(r0) * D_);
  }
  // Re-reads quantized rows [r0, r0 + n) tile by tile and encodes them.
  template <Mode M>
  void encode_pass(int r0, int n) {
    for (int r = r0; r < r0 + n; r += tile_rows(D_)) {
      const int m = std::min(tile_rows(D_), r0 + n - r);
      encode_span_of_rows<M>(load_rows(X_, t_.fp_head + r, m, s_.x), r, m);
    }
  }
  void emit(const float* x, const float* y, size_t count, size_t first_code) {
    put_codes(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), first_code);
    es_.push(x, y, count);
  }

  const StoredMatrix& X_;
  QuantizedTensor& t_;
  ErrorStream& es_;
  float* recon_;
  Scratch& s_;
  const int D_;
};

size_t group_count(const QuantizedTensor& t) {
  const int rq = t.quantized_rows();
  if (rq <= 0) return 0;
  switch (t.spec.axis) {
    case Axis::Token: return static_cast<size_t>(rq) * ((t.cols + t.group_len - 1) / t.group_len);
    case Axis::Channel: return static_cast<size_t>(t.cols) * ((rq + t.group_len - 1) / t.group_len);
    case Axis::Head: return 1;
  }
  return 0;
}

// Whole-axis groups with clip search need every element per candidate ratio: convert and use quantize_tensor.
bool needs_fallback(const QuantizedTensor& t) {
  if (!t.spec.clip_search || t.quantized_rows() <= 0) return false;
  return t.spec.axis == Axis::Head ||
         (t.spec.axis == Axis::Channel && static_cast<size_t>(std::min(t.group_len, t.quantized_rows())) * t.cols > kMaxGroupTile);
}

}  // namespace

QuantizedTensor quantize_stored(const StoredMatrix& X, const TensorQuant& spec, int fp_head, int fp_tail, ErrorSums* err,
                                float* recon) {
  if (X.dtype != DType::F16 && X.dtype != DType::BF16 && X.dtype != DType::F32)
    throw Error("quantizer: matrices are read as F16, BF16 or F32, not " + std::string(dtype_name(X.dtype)));
  std::string problem = check_tensor_quant(spec);
  if (!problem.empty()) throw Error("quantizer: " + problem);
  const int rows = X.rows, cols = X.cols;
  if (rows < 0 || cols <= 0 || fp_head < 0 || fp_tail < 0 || fp_head + fp_tail > rows)
    throw Error("quantizer: invalid matrix or full-precision row counts");
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.spec = spec;
  t.fp_head = spec.full_precision ? rows : fp_head;
  t.fp_tail = spec.full_precision ? 0 : fp_tail;
  t.group_len = resolved_group_len(spec, t.quantized_rows(), cols);
  if (needs_fallback(t)) {
    std::vector<float> x(X.elems()), y;
    stored_to_f32(X.dtype, X.data, x.size(), x.data());
    if (!recon) y.resize(x.size());
    float* out = recon ? recon : y.data();
    QuantizedTensor q = quantize_tensor(x.data(), rows, cols, spec, fp_head, fp_tail, out);
    if (err) err->add(x.data(), out, x.size());
    return q;
  }
  t.fp16_rows.resize(static_cast<size_t>(t.fp_head + t.fp_tail) * cols);
  const size_t ng = group_count(t);
  t.scales.resize(ng);
  if (!spec.symmetric) t.zeros.resize(ng);
  if (t.quantized_rows() > 0) t.codes.assign(packed_bytes(static_cast<size_t>(t.quantized_rows()) * cols, spec.bits), 0);

  thread_local Scratch scratch;
  ErrorStream es(err);
  Kernel k(X, t, es, recon, scratch);
  k.fp_rows(0, t.fp_head, 0);
  if (t.quantized_rows() > 0) {
    switch (mode_of(spec)) {
      case Mode::Sym: k.quantized_rows<Mode::Sym>(); break;
      case Mode::SymInverse: k.quantized_rows<Mode::SymInverse>(); break;
      case Mode::AsymFloat: k.quantized_rows<Mode::AsymFloat>(); break;
      case Mode::AsymInt: k.quantized_rows<Mode::AsymInt>(); break;
    }
  }
  k.fp_rows(rows - t.fp_tail, rows, t.fp_head);
  es.flush();
  return t;
}

std::vector<StoredResult> quantize_stored_all(const std::vector<StoredJob>& jobs) {
  std::vector<StoredResult> out(jobs.size());
  parallel_for(static_cast<int64_t>(jobs.size()), [&](int64_t i) {
    const StoredJob& j = jobs[i];
    out[i].q = quantize_stored(j.x, j.spec, j.fp_head, j.fp_tail, &out[i].err, j.recon);
  });
  return out;
}

}  // namespace kvscope
