#include "core/tensor/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "core/tensor/worker_pool.h"

// cblas_sgemm of the system's BLAS (OpenBLAS; core/CMakeLists.txt links libblas). Declared here:
// Debian ships the library without a cblas.h in the runtime package.
extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                            int lda, const float* b, int ldb, float beta, float* c, int ldc);

namespace kvscope {

namespace {

// ---- kernels: AVX2+FMA+F16C when the CPU has them, plain loops otherwise -------------------

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(DType t, const unsigned char* p) {
  if (t == DType::F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (t == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));  // BF16
}

float load1(DType t, const unsigned char* p) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// The end of every AVX2 and AVX-512 dot product, so that both give the same bits: the 8-wide tail
// into a[0], the N accumulators summed as a pairwise tree ((a0 + a1) + (a2 + a3)) + ..., the 8
// lanes reduced, the scalar tail.
template <DType T, int N>
__attribute__((target("avx2,fma,f16c"))) inline float finish_dot(__m256* a, const unsigned char* row, const float* x,
                                                                  int64_t i, int64_t n) {
  constexpr int64_t es = T == DType::F32 ? 4 : 2;
  for (; i + 8 <= n; i += 8) a[0] = _mm256_fmadd_ps(load8(T, row + i * es), _mm256_loadu_ps(x + i), a[0]);
  for (int w = N; w > 1; w /= 2)
    for (int k = 0; k < w / 2; ++k) a[k] = _mm256_add_ps(a[2 * k], a[2 * k + 1]);
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(a[0]), _mm256_extractf128_ps(a[0], 1));
  r = _mm_hadd_ps(r, r);
  r = _mm_hadd_ps(r, r);
  float acc = _mm_cvtss_f32(r);
  for (; i < n; ++i) acc += load1(T, row + i * es) * x[i];
  return acc;
}

// N accumulators of 8 lanes, 8 * N elements per step: N = 4 for F32 and F16 (the shared models'
// golden outputs were computed with this order), N = 8 for BF16 rows (64 weights, 128 bytes per
// step: the 4-accumulator loop read 29-35 GB/s per core on the 0.5B shape's rows, this one 34-35
// on gate/up rows and 22 -> 28 on down rows of 4,864, where x is 19 KB of f32).
template <DType T, int N>
__attribute__((target("avx2,fma,f16c"))) inline float dot_avx2_t(const unsigned char* row, const float* x, int64_t n) {
  constexpr int64_t es = T == DType::F32 ? 4 : 2;
  __m256 a[N];
  for (auto& v : a) v = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 * N <= n; i += 8 * N)
    for (int j = 0; j < N; ++j) a[j] = _mm256_fmadd_ps(load8(T, row + (i + 8 * j) * es), _mm256_loadu_ps(x + i + 8 * j), a[j]);
  return finish_dot<T, N>(a, row, x, i, n);
}

// The same lanes and sums with 16-float registers: zmm accumulator j holds the AVX2 loop's
// accumulators 2j and 2j + 1, so the results are bit-identical, from half the instructions per
// byte. On the 0.5B shape's rows (BF16, 2 threads, file mapped in 2 MB pages): down 44-45 -> 57-58
// GB/s, q 50-51 -> 53-56, gate 56-57 -> 58-59, LM head 59 -> 60-61.
#define KVSCOPE_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#if defined(__GNUC__) && !defined(__clang__)  // GCC 12's AVX-512 headers trip its own uninitialized warnings
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <DType T>
KVSCOPE_AVX512 inline __m512 load16(const unsigned char* p) {
  if constexpr (T == DType::F32) return _mm512_loadu_ps(p);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (T == DType::F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));  // BF16
}

// zmm accumulator j -> the AVX2 loop's accumulators 2j (low half) and 2j + 1 (high half).
template <int K>
KVSCOPE_AVX512 inline void split_halves(const __m512* A, __m256* a) {
  for (int j = 0; j < K; ++j) {
    a[2 * j] = _mm512_castps512_ps256(A[j]);
    a[2 * j + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(A[j]), 1));
  }
}

template <DType T, int N>
KVSCOPE_AVX512 inline float dot_avx512_t(const unsigned char* row, const float* x, int64_t n) {
  constexpr int64_t es = T == DType::F32 ? 4 : 2;
  constexpr int K = N / 2;
  __m512 A[K];
  for (auto& v : A) v = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 8 * N <= n; i += 8 * N)
    for (int j = 0; j < K; ++j)
      A[j] = _mm512_fmadd_ps(load16<T>(row + (i + 16 * j) * es), _mm512_loadu_ps(x + i + 16 * j), A[j]);
  __m256 a[N];
  split_halves<K>(A, a);
  return finish_dot<T, N>(a, row, x, i, n);
}

// y[r] = row r . x for rows [lo, hi) of a matrix with row_bytes per row.
template <DType T, int N>
__attribute__((target("avx2,fma,f16c"))) void dot_rows_avx2(const unsigned char* data, int64_t row_bytes, int64_t lo,
                                                            int64_t hi, const float* x, int64_t n, float* y) {
  for (int64_t r = lo; r < hi; ++r) y[r] = dot_avx2_t<T, N>(data + r * row_bytes, x, n);
}

// Rows longer than kLongRow floats (x no longer fits beside the streamed weights in L1: an 8B
// model's down projection, x of 14,336 floats = 56 KB) go 4 at a time, each x load serving 4 rows,
// every row with its own accumulators in the same order (the same bits). Llama-3-8B-shaped down
// rows: 35 -> 49 GB/s; on rows whose x fits, one row at a time stays faster (45-49 vs 37-41).
constexpr int64_t kLongRow = 8192;

template <DType T, int N>
KVSCOPE_AVX512 void dot_rows_avx512(const unsigned char* data, int64_t row_bytes, int64_t lo, int64_t hi, const float* x,
                                    int64_t n, float* y) {
  constexpr int64_t es = T == DType::F32 ? 4 : 2;
  constexpr int K = N / 2, R = 4;
  int64_t r = lo;
  if (n > kLongRow)
    for (; r + R <= hi; r += R) {
      const unsigned char* row = data + r * row_bytes;
      __m512 A[R][K];
      for (auto& q : A)
        for (auto& v : q) v = _mm512_setzero_ps();
      int64_t i = 0;
      for (; i + 8 * N <= n; i += 8 * N)
        for (int j = 0; j < K; ++j) {
          const __m512 xv = _mm512_loadu_ps(x + i + 16 * j);
          for (int q = 0; q < R; ++q)
            A[q][j] = _mm512_fmadd_ps(load16<T>(row + q * row_bytes + (i + 16 * j) * es), xv, A[q][j]);
        }
      for (int q = 0; q < R; ++q) {
        __m256 a[N];
        split_halves<K>(A[q], a);
        y[r + q] = finish_dot<T, N>(a, row + q * row_bytes, x, i, n);
      }
    }
  for (; r < hi; ++r) y[r] = dot_avx512_t<T, N>(data + r * row_bytes, x, n);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef KVSCOPE_AVX512

float dot_avx2(DType t, const unsigned char* row, const float* x, int64_t n) {
  if (t == DType::F32) return dot_avx2_t<DType::F32, 4>(row, x, n);
  if (t == DType::F16) return dot_avx2_t<DType::F16, 4>(row, x, n);
  return dot_avx2_t<DType::BF16, 4>(row, x, n);
}

float dot_plain(DType t, const unsigned char* row, const float* x, int64_t n) {
  const int64_t es = static_cast<int64_t>(dtype_size(t));
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += load1(t, row + i * es) * x[i];
  return acc;
}

__attribute__((target("avx2,fma,f16c"))) void convert_avx2(DType t, const unsigned char* src, int64_t n, float* dst) {
  const int64_t es = static_cast<int64_t>(dtype_size(t));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(t, src + i * es));
  for (; i < n; ++i) dst[i] = load1(t, src + i * es);
}


std::atomic<int> g_gemv_isa{static_cast<int>(GemvIsa::Auto)};
std::atomic<bool> g_gemv_legacy{false};


bool have_avx512() {
  static const bool ok = have_avx2() && __builtin_cpu_supports("avx512f");
  return ok;
}

GemvIsa gemv_isa_now() {
  const auto forced = static_cast<GemvIsa>(g_gemv_isa.load(std::memory_order_relaxed));
  if (forced == GemvIsa::Portable || !have_avx2()) return GemvIsa::Portable;
  if (forced == GemvIsa::Avx2 || !have_avx512()) return GemvIsa::Avx2;
  return GemvIsa::Avx512;
}

constexpr int64_t kScratchFloats = int64_t{8} << 20;  // 32 MB of converted weight rows per block

}  // namespace

void force_gemv_isa(GemvIsa isa) { g_gemv_isa.store(static_cast<int>(isa), std::memory_order_relaxed); }

GemvIsa gemv_isa() { return gemv_isa_now(); }

void set_gemv_legacy(bool on) { g_gemv_legacy.store(on, std::memory_order_relaxed); }

void convert_row(DType t, const void* src, int64_t n, float* dst) {
  const auto* p = static_cast<const unsigned char*>(src);
  if (t == DType::F32) {
    if (n > 0) std::memcpy(dst, p, static_cast<size_t>(n) * 4);
  } else if (have_avx2()) {
    convert_avx2(t, p, n, dst);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = load1(t, p + i * 2);
  }
}

float dot_stored(DType t, const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const unsigned char*>(row);
  return have_avx2() ? dot_avx2(t, p, x, n) : dot_plain(t, p, x, n);
}

void gemv_stored(std::span<const GemvPart> parts, const float* x, int threads) {
  int64_t total = 0;
  for (const auto& p : parts) total += p.w->rows;
  // Below ~64k multiply-adds a second thread costs more than it saves. Above, chunks of ~32k
  // multiply-adds (at most 64).
  const int64_t work = parts.empty() ? 0 : total * parts[0].w->cols;
  const bool legacy = g_gemv_legacy.load(std::memory_order_relaxed);
  const int chunks = work < (int64_t{1} << 16) || threads <= 1
                         ? 1
                         : static_cast<int>(std::clamp<int64_t>(work >> 15, threads, std::min<int64_t>(64, total)));
  const GemvIsa isa = gemv_isa_now();
  const bool avx2 = isa == GemvIsa::Avx2 || (isa == GemvIsa::Avx512 && legacy), avx512 = isa == GemvIsa::Avx512 && !legacy;
  auto rows = [&](int chunk) {
    long begin, end;
    part_range(static_cast<long>(total), chunk, chunks, &begin, &end);
    int64_t base = 0;
    for (const auto& p : parts) {
      const WeightMatrix& w = *p.w;
      const int64_t lo = std::max<int64_t>(begin, base) - base, hi = std::min<int64_t>(end, base + w.rows) - base;
      const int64_t row_bytes = w.cols * static_cast<int64_t>(dtype_size(w.dtype));
      const auto* data = static_cast<const unsigned char*>(w.data);
      if (avx512 && w.dtype == DType::F32) dot_rows_avx512<DType::F32, 4>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else if (avx512 && w.dtype == DType::BF16) dot_rows_avx512<DType::BF16, 8>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else if (avx512 && w.dtype == DType::F16) dot_rows_avx512<DType::F16, 4>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else if (avx2 && w.dtype == DType::F32) dot_rows_avx2<DType::F32, 4>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else if (avx2 && w.dtype == DType::BF16 && !legacy) dot_rows_avx2<DType::BF16, 8>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else if (avx2 && w.dtype == DType::BF16) dot_rows_avx2<DType::BF16, 4>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else if (avx2 && w.dtype == DType::F16) dot_rows_avx2<DType::F16, 4>(data, row_bytes, lo, hi, x, w.cols, p.y);
      else
        for (int64_t r = lo; r < hi; ++r) p.y[r] = dot_plain(w.dtype, data + r * row_bytes, x, w.cols);
      base += w.rows;
    }
  };
  if (legacy || chunks == 1) {  // session 6: each chunk claimed from the pool
    run_parts(chunks, [&](int part, int) { rows(part); });
    return;
  }
  // One lane of consecutive chunks per thread: a thread reads its lane front to back (one stream
  // for the prefetchers, the threads far apart in memory), then takes what is left of the other
  // lanes, so a helper descheduled on a busy machine costs little. Each chunk is one claim.
  struct alignas(64) Lane {
    std::atomic<int> next;
    int end;
  };
  constexpr int kMaxLanes = 16;
  const int lanes = std::min({threads, chunks, kMaxLanes});
  Lane lane[kMaxLanes];
  for (int l = 0; l < lanes; ++l) {
    lane[l].next.store(chunks * l / lanes, std::memory_order_relaxed);
    lane[l].end = chunks * (l + 1) / lanes;
  }
  run_parts(lanes, [&](int part, int) {
    for (int k = 0; k < lanes; ++k) {
      Lane& ln = lane[(part + k) % lanes];
      for (int c; (c = ln.next.fetch_add(1, std::memory_order_relaxed)) < ln.end;) rows(c);
    }
  });
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
  cblas_sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

void gemm_stored(const float* x, int64_t n, int64_t ldx, const WeightMatrix& w, float* y, int64_t ldy) {
  if (w.dtype == DType::F32 && reinterpret_cast<uintptr_t>(w.data) % alignof(float) == 0) {
    sgemm(false, true, n, w.rows, w.cols, 1.f, x, ldx, static_cast<const float*>(w.data), w.cols, 0.f, y, ldy);
    return;
  }
  // Convert blocks of rows into a per-thread scratch buffer, reused across calls and layers.
  thread_local std::vector<float> scratch;
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(w.rows, kScratchFloats / std::max<int64_t>(1, w.cols)));
  if (static_cast<int64_t>(scratch.size()) < block * w.cols) scratch.resize(static_cast<size_t>(block * w.cols));
  const int64_t row_bytes = w.cols * static_cast<int64_t>(dtype_size(w.dtype));
  const auto* data = static_cast<const unsigned char*>(w.data);
  float* const buf = scratch.data();  // the helpers' own thread_local would be another buffer
  const int threads = kernel_threads();
  for (int64_t r0 = 0; r0 < w.rows; r0 += block) {
    const int64_t nr = std::min(block, w.rows - r0);
    run_parts(threads, [&](int part, int parts) {
      long b, e;
      part_range(static_cast<long>(nr), part, parts, &b, &e);
      for (int64_t r = b; r < e; ++r) convert_row(w.dtype, data + (r0 + r) * row_bytes, w.cols, buf + r * w.cols);
    });
    sgemm(false, true, n, nr, w.cols, 1.f, x, ldx, buf, w.cols, 0.f, y + r0, ldy);
  }
}

}  // namespace kvscope
