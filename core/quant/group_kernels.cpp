#include "core/quant/group_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
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

// Parameters of n groups from their ranges (params_from_range, branch-free: L::params, one vector loop).
template <class L, Mode M>
void params_many(const float* mn, const float* mx, size_t n, const TensorQuant& q, float fq, float* s, float* z) {
  const float alpha = static_cast<float>(q.clip_ratio);
  switch (q.scale_dtype) {
    case DType::F16: L::template params<M, DType::F16>(mn, mx, n, alpha, fq, s, z); return;
    case DType::BF16: L::template params<M, DType::BF16>(mn, mx, n, alpha, fq, s, z); return;
    default: L::template params<M, DType::F32>(mn, mx, n, alpha, fq, s, z); return;
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

// The hot loops, once per instruction set (group_kernels_simd.inc); quantize_stored picks one at
// run time. Functions defined between push_options and pop_options get that target; the helpers
// they inline from headers (group_math.h, error_lanes.h, the standard library) are built for the
// baseline elsewhere, so no AVX-512 code can leak into a shared inline copy.
#define KV_INLINE __attribute__((always_inline)) inline
// Vectors pass between inline helpers only (never across a library boundary): no ABI concern.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 flags the _mm512_undefined_ps() inside _mm512_max_ps / _mm512_min_ps (a false positive).
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// The target regions: GCC's push_options / target, clang's attribute push (the fuzz build).
#ifdef __clang__
#define KVSCOPE_TARGET_BEGIN(gcc, clang) _Pragma(clang)
#define KVSCOPE_TARGET_END _Pragma("clang attribute pop")
#else
#define KVSCOPE_TARGET_BEGIN(gcc, clang) _Pragma("GCC push_options") _Pragma(gcc)
#define KVSCOPE_TARGET_END _Pragma("GCC pop_options")
#endif
KVSCOPE_TARGET_BEGIN("GCC target(\"avx512f,avx512bw,avx512dq,avx512vl,f16c,bmi2,prefer-vector-width=512\")",
                     "clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512dq,avx512vl,f16c,bmi2\"))), apply_to = function)")
namespace isa_avx512 {
#define KVSCOPE_ISA 4
#include "core/quant/group_kernels_simd.inc"
#undef KVSCOPE_ISA
}  // namespace isa_avx512
KVSCOPE_TARGET_END
KVSCOPE_TARGET_BEGIN("GCC target(\"avx2,f16c\")", "clang attribute push(__attribute__((target(\"avx2,f16c\"))), apply_to = function)")
namespace isa_avx2 {
#define KVSCOPE_ISA 3
#include "core/quant/group_kernels_simd.inc"
#undef KVSCOPE_ISA
}  // namespace isa_avx2
KVSCOPE_TARGET_END
namespace isa_baseline {
#define KVSCOPE_ISA 1
#include "core/quant/group_kernels_simd.inc"
#undef KVSCOPE_ISA
}  // namespace isa_baseline
#undef KV_INLINE
#undef KVSCOPE_TARGET_BEGIN
#undef KVSCOPE_TARGET_END

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
template <class L>
const float* load_rows(const StoredMatrix& X, int r0, int n, std::vector<float>& buf) {
  const size_t count = static_cast<size_t>(n) * X.cols;
  const unsigned char* p = X.row_ptr(r0);
  if (X.dtype == DType::F32 && reinterpret_cast<uintptr_t>(p) % alignof(float) == 0) return reinterpret_cast<const float*>(p);
  if (buf.size() < count) buf.resize(count);
  L::to_f32(X.dtype, p, count, buf.data());
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

// Writes n codes at element index `first` of a zero-initialised packed stream (L::pack: the
// packing loop of one instruction set).
template <class L>
void put_codes(const uint8_t* codes, size_t n, int bits, uint8_t* out, size_t first) {
  size_t i = 0;
  for (; i < n && ((first + i) * bits) % 8 != 0; ++i) {  // at most 7 codes up to a byte boundary
    const size_t bit = (first + i) * bits;
    const unsigned v = static_cast<unsigned>(codes[i]) << (bit % 8);
    out[bit / 8] |= static_cast<uint8_t>(v);
    if (bit % 8 + bits > 8) out[bit / 8 + 1] |= static_cast<uint8_t>(v >> 8);
  }
  if (i < n) L::pack(codes + i, n - i, bits, out + (first + i) * bits / 8);
}

// L: the Leaves of one instruction set.
template <class L>
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
          L::token_ranges(x, n, D_, g, s_.mn.data(), s_.mx.data());
          if (search) {
            for (size_t k = 0; k < ng; ++k) {
              const size_t off = k / per_row * D_ + k % per_row * g;
              const Params p = choose_params<M>(GroupView{x + off, std::min<int64_t>(g, D_ - k % per_row * g), 1},
                                                s_.mn[k], s_.mx[k], t_.spec, qmax);
              sc[k] = p.s, zc[k] = p.z;
            }
          } else {
            params_many<L, M>(s_.mn.data(), s_.mx.data(), ng, t_.spec, fq, sc, zc);
          }
          if (D_ % 16 == 0 && g % 16 == 0 && es_.pending() == 0) {  // one pass: codes, reconstruction if asked, error sums
            float* y = recon_ ? recon_ + (h + r0) * static_cast<size_t>(D_) : nullptr;
            // Groups of 16 * 2^k <= 256 elements that tile the rows: every error block (256
            // elements from the start, rows of D before) starts at a group boundary.
            if (D_ % g == 0 && g <= 256 && (g & (g - 1)) == 0 && es_.block().pos % g == 0) {
              L::template encode_tile_sums<M, false>(x, count, D_, g, sc, zc, fq, s_.codes.data(), y, es_, ahead(h + r0 + n));
            } else {
              L::template token_encode_sums<M>(x, n, D_, g, sc, zc, fq, s_.codes.data(), y, es_);
            }
            put_codes<L>(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), static_cast<size_t>(r0) * D_);
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
            L::fold_range(x, n, D_, s_.mn.data(), s_.mx.data());
            if (search) {
              for (int c = 0; c < D_; ++c) {
                const Params p = choose_params<M>(GroupView{x + c, n, D_}, s_.mn[c], s_.mx[c], t_.spec, qmax);
                s_.sc[c] = p.s, s_.zc[c] = p.z;
              }
            } else {
              params_many<L, M>(s_.mn.data(), s_.mx.data(), D_, t_.spec, fq, s_.sc.data(), s_.zc.data());
            }
            store_columns(sc, zc);
            encode_span_of_rows<M>(x, r0, n);
          } else {  // a long group: a range pass, then an encoding pass
            reset_range();
            for (int r = r0; r < r0 + n; r += tile_rows(D_)) {
              const int m = std::min(tile_rows(D_), r0 + n - r);
              L::fold_range(rows(h + r, m), m, D_, s_.mn.data(), s_.mx.data());
            }
            params_many<L, M>(s_.mn.data(), s_.mx.data(), D_, t_.spec, fq, s_.sc.data(), s_.zc.data());
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
    if (!orig_) return load_rows<L>(X_, r0, n, s_.x);
    float* dst = orig_ + static_cast<size_t>(r0) * D_;
    L::to_f32(X_.dtype, X_.row_ptr(r0), static_cast<size_t>(n) * D_, dst);
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
    if (D_ % 16 == 0 && es_.pending() == 0) {  // one pass: codes, reconstruction if asked, error sums
      float* y = recon_ ? recon_ + static_cast<size_t>(t_.fp_head + r0) * D_ : nullptr;
      L::template encode_tile_sums<M, true>(x, count, D_, 0, s_.sc.data(), s_.zc.data(), fq, s_.codes.data(), y, es_, ahead(t_.fp_head + r0 + n));
      put_codes<L>(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), static_cast<size_t>(r0) * D_);
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
    put_codes<L>(s_.codes.data(), count, t_.spec.bits, t_.codes.data(), first_code);
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

template <class L>
void run_kernel(const StoredMatrix& X, QuantizedTensor& t, ErrorLanes& es, float* recon, float* orig, Scratch& scratch) {
  Kernel<L> k(X, t, es, recon, orig, scratch);
  k.fp_rows(0, t.fp_head, 0);
  if (t.quantized_rows() > 0) {
    switch (mode_of(t.spec)) {
      case Mode::Sym: k.template quantized_rows<Mode::Sym>(); break;
      case Mode::SymInverse: k.template quantized_rows<Mode::SymInverse>(); break;
      case Mode::AsymFloat: k.template quantized_rows<Mode::AsymFloat>(); break;
      case Mode::AsymInt: k.template quantized_rows<Mode::AsymInt>(); break;
    }
  }
  k.fp_rows(t.rows - t.fp_tail, t.rows, t.fp_head);
}

bool cpu_has(KernelIsa isa) {
  __builtin_cpu_init();  // needed when this runs before main (a static initializer)
  switch (isa) {
    case KernelIsa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("bmi2");
    case KernelIsa::Avx2: return __builtin_cpu_supports("avx2");
    default: return true;
  }
}

KernelIsa best_isa() {
  for (KernelIsa i : {KernelIsa::Avx512, KernelIsa::Avx2})
    if (cpu_has(i)) return i;
  return KernelIsa::Baseline;
}

std::atomic<KernelIsa> g_isa{KernelIsa::Auto};

KernelIsa active_isa() {
  static const KernelIsa best = best_isa();
  const KernelIsa forced = g_isa.load(std::memory_order_relaxed);
  return forced == KernelIsa::Auto ? best : forced;
}

}  // namespace

bool set_group_kernel_isa(KernelIsa isa) {
  if (isa != KernelIsa::Auto && !cpu_has(isa)) return false;
  g_isa.store(isa);
  return true;
}

const char* group_kernel_isa_name() {
  switch (active_isa()) {
    case KernelIsa::Avx512: return "avx512";
    case KernelIsa::Avx2: return "avx2";
    default: return "baseline";
  }
}

QuantizedTensor quantize_stored(const StoredMatrix& file_x, const TensorQuant& spec, int fp_head, int fp_tail, ErrorSums* err,
                                float* recon, float* orig) {
  thread_local std::vector<unsigned char> staged;  // a file's slice, read with pread (no page faults)
  const StoredMatrix X = stage(file_x, staged);
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
  switch (active_isa()) {
    case KernelIsa::Avx512: run_kernel<isa_avx512::Leaves>(X, t, es, recon, orig, scratch); break;
    case KernelIsa::Avx2: run_kernel<isa_avx2::Leaves>(X, t, es, recon, orig, scratch); break;
    default: run_kernel<isa_baseline::Leaves>(X, t, es, recon, orig, scratch); break;
  }
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
