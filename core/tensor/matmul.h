#pragma once
// Matrix products over weights kept at their stored precision (F32, F16, BF16; memory-mapped).
//   decode (one row):  a hand-written mat-vec that converts each weight as it is read, so a step
//                      reads the weights' stored bytes once (the memory-read bound);
//   prefill (n rows):  blocks of weight rows converted to f32 into a reusable scratch buffer,
//                      then OpenBLAS sgemm (F32 weights go to sgemm directly, no copy).
// Why not a bf16 GEMM: OpenBLAS 0.3.21 has sbgemm only for AVX512-BF16 machines (this one has
// AVX2), and converting a block costs ~1/(2 n) of its GEMM's FLOPs: nothing at n >= 64.
#include <cstdint>
#include <span>

#include "core/tensor/dtype.h"

namespace kvscope {

// A [rows, cols] row-major weight matrix, y = W x, in its stored dtype (F32, F16 or BF16).
struct WeightMatrix {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  int64_t bytes() const { return rows * cols * static_cast<int64_t>(dtype_size(dtype)); }
};

// One mat-vec of a fused group: y[rows] = W x.
struct GemvPart {
  const WeightMatrix* w;
  float* y;
};

// y_i = W_i x for every part (all share x, [cols]); the rows of all parts are cut into chunks of
// ~32k multiply-adds (at most 64), dealt as one lane of consecutive chunks per thread; a thread
// that finishes its lane claims the others' leftovers. Measured (0.5B shape, bf16, 2 threads): the
// lanes read ~49 GB/s where 64 chunks claimed in turn from the pool read ~42 (each claim jumps
// to a new place for the prefetchers, the threads' chunks interleaved in memory); fixed halves
// read up to ~52 on a quiet machine but lose to the claimed chunks when a helper is descheduled.
void gemv_stored(std::span<const GemvPart> parts, const float* x, int threads);

// The mat-vec kernels: AVX-512 (16-float registers holding the AVX2 loop's accumulators in pairs:
// bit-identical to it), AVX2+FMA+F16C, or plain loops. Auto picks the best the CPU has
// (__builtin_cpu_supports); forcing one is for tests and A/Bs. (Session 7 measured an AVX-512 kernel
// with 4 rows per pass slower, 55-60 vs 74 GB/s; one row per pass with the same lanes is faster:
// matmul.cpp.)
enum class GemvIsa { Auto, Avx512, Avx2, Portable };
void force_gemv_isa(GemvIsa isa);
GemvIsa gemv_isa();  // the kernel gemv_stored uses now (never Auto)
// Benchmarks (A/B in one run): the mat-vec of session 6 (up to 64 pieces, BF16 rows with the
// 4-accumulator loop) instead of the current one.
void set_gemv_legacy(bool on);

// Y[:, 0:w.rows] = X W^T for X [n, w.cols] (row stride ldx) and Y with row stride ldy.
void gemm_stored(const float* x, int64_t n, int64_t ldx, const WeightMatrix& w, float* y, int64_t ldy);

// Row-major C[m, n] = alpha * op(A) op(B) + beta * C (the system BLAS: OpenBLAS cblas_sgemm).
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// dst[i] = float(src[i]) for n elements of a stored dtype (vectorized for F16/BF16).
void convert_row(DType t, const void* src, int64_t n, float* dst);

// Dot product of a stored row with an f32 vector.
float dot_stored(DType t, const void* row, const float* x, int64_t n);

}  // namespace kvscope
