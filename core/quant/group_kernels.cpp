#include "core/quant/group_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/metrics/error_lanes.h"
#include "core/quant/group_math.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

namespace {

using namespace group_math;

struct Scratch {
  std::vector<float> x, y, sc, zc, mn, mx;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> half;
};

// Rows per tile of the token axis and of the passes over long groups: a few thousand elements
// (x, y and codes of a tile stay in L1).
int tile_rows(int cols) { return std::max(1, 4096 / cols); }
// Channel groups up to this many elements are converted once and quantized from the tile.
constexpr size_t kMaxGroupTile = 1 << 16;

#define KVSCOPE_CLONES __attribute__((target_clones("avx2", "default")))

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

// v8f (core/metrics/error_lanes.h): eight floats in one AVX2 register or two SSE2 ones, GCC's
// vector extension, so the default clone builds too. Min / max as `x < a ? x : a` skip NaN like
// std::min(a, x). Internal helpers only (never across a library boundary): no vector ABI concern.
#pragma GCC diagnostic ignored "-Wpsabi"

// Min / max of the 8 lanes, skipping NaN lanes (+inf / -inf when all are NaN), as the scalar fold
// `a = v[l] < a ? v[l] : a` from +inf: NaN lanes become the identity, then a shuffle tree (min and
// max do not depend on the order for non-NaN values).
__attribute__((always_inline)) inline float hmin8(v8f v) {
  v = v == v ? v : v8f{} + INFINITY;
  v8f t = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = t < v ? t : v;
  t = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v = t < v ? t : v;
  t = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  v = t < v ? t : v;
  return v[0];
}
__attribute__((always_inline)) inline float hmax8(v8f v) {
  v = v == v ? v : v8f{} - INFINITY;
  v8f t = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = v < t ? t : v;
  t = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v = v < t ? t : v;
  t = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  v = v < t ? t : v;
  return v[0];
}

// Min / max of each per-token group of `rows` rows (group order). Groups of a multiple of 8
// elements run 8 lanes at a time (the compiler leaves this reduction scalar), then fold the
// lanes; min / max do not depend on the order for non-NaN values, and NaN is skipped either way.
KVSCOPE_CLONES void token_ranges(const float* x, int rows, int D, int g, float* mn, float* mx) {
  size_t k = 0;
  for (int r = 0; r < rows; ++r)
    for (int c0 = 0; c0 < D; c0 += g, ++k) {
      const float* p = x + static_cast<size_t>(r) * D + c0;
      const int n = std::min(g, D - c0), n8 = n / 8 * 8;
      float a = INFINITY, b = -INFINITY;
      if (n8 > 0) {
        v8f va = load8(p), vb = va;
        for (int i = 8; i < n8; i += 8) {
          const v8f v = load8(p + i);
          va = v < va ? v : va;
          vb = vb < v ? v : vb;
        }
        a = hmin8(va);
        b = hmax8(vb);
      }
      for (int i = n8; i < n; ++i) {
        a = std::min(a, p[i]);
        b = std::max(b, p[i]);
      }
      mn[k] = a;
      mx[k] = b;
    }
}

// Parameters of n groups from their ranges (params_from_range, branch-free: one vector loop).
template <Mode M, DType T>
KVSCOPE_CLONES void params_loop(const float* mn, const float* mx, size_t n, float alpha, float fq, float* s, float* z) {
  for (size_t i = 0; i < n; ++i) params_nb<M, T>(mn[i], mx[i], alpha, fq, &s[i], &z[i]);
}

template <Mode M>
void params_many(const float* mn, const float* mx, size_t n, const TensorQuant& q, float fq, float* s, float* z) {
  const float alpha = static_cast<float>(q.clip_ratio);
  switch (q.scale_dtype) {
    case DType::F16: params_loop<M, DType::F16>(mn, mx, n, alpha, fq, s, z); return;
    case DType::BF16: params_loop<M, DType::BF16>(mn, mx, n, alpha, fq, s, z); return;
    default: params_loop<M, DType::F32>(mn, mx, n, alpha, fq, s, z); return;
  }
}

// Codes and reconstruction of `rows` rows of per-token groups with parameters s[k], z[k].
template <Mode M>
KVSCOPE_CLONES void token_encode(const float* x, int rows, int D, int g, const float* s, const float* z, float fq,
                                 uint8_t* codes, float* y) {
  size_t k = 0;
  for (int r = 0; r < rows; ++r)
    for (int c0 = 0; c0 < D; c0 += g, ++k) {
      const size_t off = static_cast<size_t>(r) * D + c0;
      const int n = std::min(g, D - c0);
      const float sv = s[k], zv = z[k];
      const float* xo = x + off;
      uint8_t* co = codes + off;
      float* yo = y + off;
      for (int i = 0; i < n; ++i) co[i] = encode<M>(xo[i], sv, zv, fq, &yo[i]);
    }
}

typedef uint8_t v8u8 __attribute__((vector_size(8)));
typedef uint8_t v32u8 __attribute__((vector_size(32)));

// The rest of encode<M> from the rounded value q: the reconstruction (returned) and the codes.
template <Mode M>
__attribute__((always_inline)) inline v8f finish8(const v8f& q, const v8f& s, const v8f& z, float fq, uint8_t* codes) {
  v8f y, c;
  if constexpr (M == Mode::Sym) y = q * s, c = q + fq;
  else if constexpr (M == Mode::SymInverse) y = q / s, c = q + fq;
  else if constexpr (M == Mode::AsymFloat) y = q * s + z, c = q;
  else y = q * s, c = q + z;
  // Low byte of each 32-bit code: a byte shuffle (a narrowing conversion compiles to scalar code).
  const v32u8 w = reinterpret_cast<v32u8>(__builtin_convertvector(c, v8i));
  const v8u8 b = __builtin_shufflevector(w, w, 0, 4, 8, 12, 16, 20, 24, 28);
  std::memcpy(codes, &b, 8);
  return y;
}

// encode<M> on 8 elements (the same operations in the same order, so the same bits).
template <Mode M>
__attribute__((always_inline)) inline v8f encode8(const v8f& x, const v8f& s, const v8f& z, float fq, uint8_t* codes) {
  v8f v, lo, hi;
  if constexpr (M == Mode::Sym) v = x / s, lo = v8f{} - fq, hi = v8f{} + fq;
  else if constexpr (M == Mode::SymInverse) v = x * s, lo = v8f{} - fq, hi = v8f{} + fq;
  else if constexpr (M == Mode::AsymFloat) v = (x - z) / s, lo = v8f{}, hi = v8f{} + fq;
  else v = x / s, lo = -z, hi = fq - z;
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  constexpr float magic = 12582912.0f;  // rint_small
  const v8f q = (v + magic) - magic;
  return finish8<M>(q, s, z, fq, codes);
}

// The stored bytes of the next tile, prefetched while the current one is encoded (the conversion
// of a tile would otherwise wait on memory, with nothing else to do).
struct Ahead {
  const unsigned char* p = nullptr;
  size_t bytes = 0;
  // The share of the next tile's lines matching elements [i0, i1) of this tile's `count`.
  void fetch(size_t i0, size_t i1, size_t count) const {
    if (!p) return;
    const size_t b1 = std::min(bytes, i1 * bytes / count + 64);
    for (size_t b = i0 * bytes / count / 64 * 64; b < b1; b += 64) __builtin_prefetch(p + b, 0, 3);
  }
};

// Codes, reconstruction if asked (y may be null) and error sums of `count` contiguous elements
// (whole rows of D, a multiple of 8; nothing pending in `sums`). kColumns: the parameters of element
// i are those of column i % D (arrays of D); else of group i / g, groups of g = 8 * 2^k <= 256
// elements that tile the rows, so a 256-element error block holds whole groups: the block test
// and the parameter broadcasts leave the inner loop.
template <Mode M, bool kColumns>
KVSCOPE_CLONES void encode_tile_sums(const float* x, size_t count, int D, int g, const float* s, const float* z, float fq,
                                     uint8_t* codes, float* y, ErrorLanes& sums, const Ahead& next) {
  BlockLanes blk = sums.block();  // a local copy stays in registers (the byte stores may alias `sums`)
  ErrorSums* out = sums.out();
  for (size_t i = 0; i < count;) {
    const size_t end = std::min(count, i + (BlockLanes::kBlock - blk.pos));
    next.fetch(i, end, count);
    if constexpr (kColumns) {
      for (size_t c = i % D; i < end; i += 8) {
        const v8f xv = load8(x + i);
        const v8f yv = encode8<M>(xv, load8(s + c), load8(z + c), fq, codes + i);
        if (y) store8(y + i, yv);
        blk.add8(xv, yv);
        c += 8;
        c = c == static_cast<size_t>(D) ? 0 : c;
      }
    } else {
      for (; i < end; i += g) {
        const v8f sv = v8f{} + s[i / g], zv = v8f{} + z[i / g];
        for (size_t j = i; j < i + g; j += 8) {
          const v8f xv = load8(x + j);
          const v8f yv = encode8<M>(xv, sv, zv, fq, codes + j);
          if (y) store8(y + j, yv);
          blk.add8(xv, yv);
        }
      }
    }
    if (blk.full()) blk.close(out), blk = BlockLanes{};
  }
  sums.block() = blk;
}

// n (a multiple of 8) elements with one group's parameters: codes, reconstruction if asked (y may
// be null), error sums into the block lanes, closed into `out` whenever a block fills.
template <Mode M>
inline void encode_span(const float* x, int n, float s, float z, float fq, uint8_t* codes, float* y, BlockLanes& blk,
                        ErrorSums* out) {
  const v8f sv = v8f{} + s, zv = v8f{} + z;
  for (int i = 0; i < n; i += 8) {
    const v8f xv = load8(x + i);
    const v8f yv = encode8<M>(xv, sv, zv, fq, codes + i);
    if (y) store8(y + i, yv);
    blk.add8(xv, yv);
    if (blk.full()) blk.close(out), blk = BlockLanes{};
  }
}

// token_encode + error sums in one pass, for groups of a multiple of 8 elements (D % 8 == 0,
// g % 8 == 0, no single elements pending in `sums`) of any length (encode_tile_sums takes the
// groups of a power-of-two length that tile the rows); y (may be null) receives the reconstruction.
template <Mode M>
KVSCOPE_CLONES void token_encode_sums(const float* x, int rows, int D, int g, const float* s, const float* z, float fq,
                                      uint8_t* codes, float* y, ErrorLanes& sums) {
  BlockLanes blk = sums.block();
  size_t k = 0;
  for (int r = 0; r < rows; ++r)
    for (int c0 = 0; c0 < D; c0 += g, ++k) {
      const size_t off = static_cast<size_t>(r) * D + c0;
      encode_span<M>(x + off, std::min(g, D - c0), s[k], z[k], fq, codes + off, y ? y + off : nullptr, blk, sums.out());
    }
  sums.block() = blk;
}

// Column-wise min / max folded over `rows` rows, in row order (as quantize_tensor).
KVSCOPE_CLONES void fold_range(const float* x, int rows, int D, float* mn, float* mx) {
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
KVSCOPE_CLONES void encode_rows(const float* x, int rows, int D, const float* sc, const float* zc, float qmax,
                                uint8_t* codes, float* y) {
  for (int r = 0; r < rows; ++r) {
    const size_t o = static_cast<size_t>(r) * D;
    const float* xr = x + o;
    uint8_t* cr = codes + o;
    float* yr = y + o;
    for (int c = 0; c < D; ++c) cr[c] = encode<M>(xr[c], sc[c], zc[c], qmax, &yr[c]);
  }
}

KVSCOPE_CLONES void to_f16_bits(const float* x, size_t n, uint16_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = f16_bits_of(x[i]);
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

void room(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

class Kernel {
 public:
  Kernel(const StoredMatrix& X, QuantizedTensor& t, ErrorLanes& es, float* recon, float* orig, Scratch& s)
      : X_(X), t_(t), es_(es), recon_(recon), orig_(orig), s_(s), D_(X.cols) {}

  // Kept rows [r0, r1) of the matrix: fp16 bits at fp16_rows[dst_row], reconstruction as the decoder sees it.
  void fp_rows(int r0, int r1, int dst_row) {
    for (int r = r0; r < r1; r += tile_rows(D_)) {
      const int n = std::min(tile_rows(D_), r1 - r);
      const size_t count = static_cast<size_t>(n) * D_;
      const float* x = rows(r, n);
      uint16_t* bits = t_.fp16_rows.data() + static_cast<size_t>(dst_row + r - r0) * D_;
      to_f16_bits(x, count, bits);
      float* y = out_rows(recon_, r, D_, s_.y, count);
      stored_to_f32(DType::F16, bits, count, y);
      es_.add(x, y, count);
    }
  }

  template <Mode M>
  void quantized_rows() {
    const int rq = t_.quantized_rows(), g = t_.group_len, h = t_.fp_head;
    const int qmax = qmax_of(t_.spec);
    const float fq = static_cast<float>(qmax);
    const bool search = t_.spec.clip_search;
    float* zeros = t_.zeros.empty() ? nullptr : t_.zeros.data();
    switch (t_.spec.axis) {
      case Axis::Token: {
        const size_t per_row = (D_ + g - 1) / g;
        for (int r0 = 0; r0 < rq; r0 += tile_rows(D_)) {
          const int n = std::min(tile_rows(D_), rq - r0);
          const size_t count = static_cast<size_t>(n) * D_, gi = r0 * per_row, ng = n * per_row;
          const float* x = rows(h + r0, n);
          codes_room(count);
          room(s_.mn, ng), room(s_.mx, ng), room(s_.zc, ng);
          float* sc = t_.scales.data() + gi;
          float* zc = zeros ? zeros + gi : s_.zc.data();
          token_ranges(x, n, D_, g, s_.mn.data(), s_.mx.data());
          if (search) {
            for (size_t k = 0; k < ng; ++k) {
              const size_t off = k / per_row * D_ + k % per_row * g;
              const Params p = choose_params<M>(GroupView{x + off, std::min<int64_t>(g, D_ - k % per_row * g), 1},
                                                s_.mn[k], s_.mx[k], t_.spec, qmax);
              sc[k] = p.s, zc[k] = p.z;
            }
          } else {
            params_many<M>(s_.mn.data(), s_.mx.data(), ng, t_.spec, fq, sc, zc);
          }
          if (D_ % 8 == 0 && g % 8 == 0 && es_.pending() == 0) {  // one pass: codes, reconstruction if asked, error sums
            float* y = recon_ ? recon_ + (h + r0) * static_cast<size_t>(D_) : nullptr;
            // Groups of 8 * 2^k <= 256 elements that tile the rows: every error block (256
            // elements from the start, rows of D before) starts at a group boundary.
            if (D_ % g == 0 && g <= 256 && (g & (g - 1)) == 0 && es_.block().pos % g == 0) {
              encode_tile_sums<M, false>(x, count, D_, g, sc, zc, fq, s_.codes.data(), y, es_, ahead(h + r0 + n));
            } else {
              token_encode_sums<M>(x, n, D_, g, sc, zc, fq, s_.codes.data(), y, es_);
            }
            put_codes(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), static_cast<size_t>(r0) * D_);
          } else {
            float* y = out_rows(recon_, h + r0, D_, s_.y, count);
            token_encode<M>(x, n, D_, g, sc, zc, fq, s_.codes.data(), y);
            emit(x, y, count, static_cast<size_t>(r0) * D_);
          }
        }
        return;
      }
      case Axis::Channel:
        for (int r0 = 0, b = 0; r0 < rq; r0 += g, ++b) {
          const int n = std::min(g, rq - r0);
          float* sc = t_.scales.data() + static_cast<size_t>(b) * D_;
          float* zc = zeros ? zeros + static_cast<size_t>(b) * D_ : nullptr;
          room(s_.sc, D_), room(s_.zc, D_);
          // One tile (converted once); whole-axis groups with clip search need every element per ratio.
          if (static_cast<size_t>(n) * D_ <= kMaxGroupTile || search) {
            const float* x = rows(h + r0, n);
            reset_range();
            fold_range(x, n, D_, s_.mn.data(), s_.mx.data());
            if (search) {
              for (int c = 0; c < D_; ++c) {
                const Params p = choose_params<M>(GroupView{x + c, n, D_}, s_.mn[c], s_.mx[c], t_.spec, qmax);
                s_.sc[c] = p.s, s_.zc[c] = p.z;
              }
            } else {
              params_many<M>(s_.mn.data(), s_.mx.data(), D_, t_.spec, fq, s_.sc.data(), s_.zc.data());
            }
            store_columns(sc, zc);
            encode_span_of_rows<M>(x, r0, n);
          } else {  // a long group: a range pass, then an encoding pass
            reset_range();
            for (int r = r0; r < r0 + n; r += tile_rows(D_)) {
              const int m = std::min(tile_rows(D_), r0 + n - r);
              fold_range(rows(h + r, m), m, D_, s_.mn.data(), s_.mx.data());
            }
            params_many<M>(s_.mn.data(), s_.mx.data(), D_, t_.spec, fq, s_.sc.data(), s_.zc.data());
            store_columns(sc, zc);
            encode_pass<M>(r0, n);
          }
        }
        return;
      case Axis::Head: {  // one group: a range pass, then an encoding pass
        Params p;
        if (search) {  // every element per candidate ratio: the whole region at once
          const float* x = rows(h, rq);
          const GroupView all{x, static_cast<int64_t>(rq) * D_, 1};
          float mn, mx;
          range_of(all, &mn, &mx);
          p = choose_params<M>(all, mn, mx, t_.spec, qmax);
        } else {
          float a = INFINITY, b = -INFINITY;
          for (int r = 0; r < rq; r += tile_rows(D_)) {
            const int m = std::min(tile_rows(D_), rq - r);
            float mn, mx;
            range_of(GroupView{rows(h + r, m), static_cast<int64_t>(m) * D_, 1}, &mn, &mx);
            a = std::min(a, mn);
            b = std::max(b, mx);
          }
          p = params_from_range(a, b, t_.spec, M, qmax, static_cast<float>(t_.spec.clip_ratio));
        }
        t_.scales[0] = p.s;
        if (zeros) zeros[0] = p.z;
        room(s_.sc, D_), room(s_.zc, D_);
        std::fill_n(s_.sc.data(), D_, p.s);
        std::fill_n(s_.zc.data(), D_, zeros ? p.z : 0.0f);
        encode_pass<M>(0, rq);
        return;
      }
    }
  }

 private:
  // The stored rows after a tile that ends before row `r` (as many as the tile had, at most).
  Ahead ahead(int r) const {
    const int n = std::min(tile_rows(D_), X_.rows - r);
    if (n <= 0) return {};
    return {X_.row_ptr(r), static_cast<size_t>(n) * D_ * dtype_size(X_.dtype)};
  }
  // Rows [r0, r0 + n) of X in f32: converted into orig_ when the caller wants the originals
  // (load_rows otherwise).
  const float* rows(int r0, int n) {
    if (!orig_) return load_rows(X_, r0, n, s_.x);
    float* dst = orig_ + static_cast<size_t>(r0) * D_;
    stored_to_f32(X_.dtype, X_.row_ptr(r0), static_cast<size_t>(n) * D_, dst);
    return dst;
  }
  void codes_room(size_t n) {
    if (s_.codes.size() < n) s_.codes.resize(n);
  }
  void reset_range() {
    room(s_.mn, D_), room(s_.mx, D_);
    std::fill_n(s_.mn.data(), D_, INFINITY);
    std::fill_n(s_.mx.data(), D_, -INFINITY);
  }
  // The per-column parameters in s_.sc / s_.zc into the stored arrays.
  void store_columns(float* sc, float* zc) {
    std::copy_n(s_.sc.data(), D_, sc);
    if (zc) std::copy_n(s_.zc.data(), D_, zc);
  }
  // Codes of quantized rows [r0, r0 + n) held in x, with the per-column parameters in s_.sc / s_.zc.
  template <Mode M>
  void encode_span_of_rows(const float* x, int r0, int n) {
    const size_t count = static_cast<size_t>(n) * D_;
    const float fq = static_cast<float>(qmax_of(t_.spec));
    codes_room(count);
    if (D_ % 8 == 0 && es_.pending() == 0) {  // one pass: codes, reconstruction if asked, error sums
      float* y = recon_ ? recon_ + static_cast<size_t>(t_.fp_head + r0) * D_ : nullptr;
      encode_tile_sums<M, true>(x, count, D_, 0, s_.sc.data(), s_.zc.data(), fq, s_.codes.data(), y, es_, ahead(t_.fp_head + r0 + n));
      put_codes(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), static_cast<size_t>(r0) * D_);
      return;
    }
    float* y = out_rows(recon_, t_.fp_head + r0, D_, s_.y, count);
    encode_rows<M>(x, n, D_, s_.sc.data(), s_.zc.data(), fq, s_.codes.data(), y);
    emit(x, y, count, static_cast<size_t>(r0) * D_);
  }
  // Re-reads quantized rows [r0, r0 + n) tile by tile and encodes them.
  template <Mode M>
  void encode_pass(int r0, int n) {
    for (int r = r0; r < r0 + n; r += tile_rows(D_)) {
      const int m = std::min(tile_rows(D_), r0 + n - r);
      encode_span_of_rows<M>(rows(t_.fp_head + r, m), r, m);
    }
  }
  void emit(const float* x, const float* y, size_t count, size_t first_code) {
    put_codes(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), first_code);
    es_.add(x, y, count);
  }

  const StoredMatrix& X_;
  QuantizedTensor& t_;
  ErrorLanes& es_;
  float* recon_;
  float* orig_;
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

}  // namespace

QuantizedTensor quantize_stored(const StoredMatrix& X, const TensorQuant& spec, int fp_head, int fp_tail, ErrorSums* err,
                                float* recon, float* orig) {
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
  t.fp16_rows.resize(static_cast<size_t>(t.fp_head + t.fp_tail) * cols);
  const size_t ng = group_count(t);
  t.scales.resize(ng);
  if (!spec.symmetric) t.zeros.resize(ng);
  if (t.quantized_rows() > 0) t.codes.assign(packed_bytes(static_cast<size_t>(t.quantized_rows()) * cols, spec.bits), 0);

  thread_local Scratch scratch;
  ErrorSums unused;
  ErrorLanes es(err ? err : &unused);
  Kernel k(X, t, es, recon, orig, scratch);
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
  es.finish();
  return t;
}

std::vector<StoredResult> quantize_stored_all(const std::vector<StoredJob>& jobs) {
  std::vector<StoredResult> out(jobs.size());
  parallel_for(static_cast<int64_t>(jobs.size()), [&](int64_t i) {
    const StoredJob& j = jobs[i];
    out[i].q = quantize_stored(j.x, j.spec, j.fp_head, j.fp_tail, &out[i].err, j.recon, j.orig);
  });
  return out;
}

}  // namespace kvscope
