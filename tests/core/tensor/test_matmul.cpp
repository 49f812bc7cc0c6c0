// The decode mat-vec (gemv_stored) against a double-precision reference on the same stored
// weights: BF16 (8-accumulator rows), F16 and F32, row lengths with and without tails (and rows
// longer than 8,192, which the AVX-512 loop takes 4 at a time), fused
// groups of matrices; the best kernel the CPU has (AVX-512), AVX2 (bit for bit the same), the
// session-6 kernel and plain loops selected by hand.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/tensor/dtype.h"
#include "core/tensor/matmul.h"
#include "core/tensor/worker_pool.h"

using namespace kvscope;

namespace {

// |y - ref| <= kSumRounding * sum_i |w_i x_i|: n float32 roundings of partial sums, each at most
// 2^-24 of the running |sum|, stay far below 1e-5 of sum |w x| for n <= 5,000.
constexpr double kSumRounding = 1e-5;

struct Case {
  DType dtype;
  int64_t rows, cols;
};

void check_gemv(const Case& c, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  // Two matrices fused in one call (as q/k/v are), sharing x.
  const int64_t rows2 = c.rows / 3 + 1;
  std::vector<float> wf(static_cast<size_t>((c.rows + rows2) * c.cols)), x(static_cast<size_t>(c.cols));
  for (auto& v : wf) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::vector<unsigned char> stored(wf.size() * dtype_size(c.dtype));
  convert_from_f32(c.dtype, wf.data(), wf.size(), stored.data());
  std::vector<float> wq(wf.size());  // the values as stored
  convert_to_f32(c.dtype, stored.data(), wf.size(), wq.data());
  const size_t es = dtype_size(c.dtype);
  WeightMatrix a{stored.data(), c.dtype, c.rows, c.cols};
  WeightMatrix b{stored.data() + c.rows * c.cols * es, c.dtype, rows2, c.cols};
  std::vector<float> y(static_cast<size_t>(c.rows + rows2), -1.f);
  const GemvPart parts[] = {{&a, y.data()}, {&b, y.data() + c.rows}};
  std::vector<float> y_auto;
  for (int mode = 0; mode < 4; ++mode) {  // best ISA, session-6 kernel, plain loops, AVX2 forced
    INFO("dtype " << dtype_name(c.dtype) << " rows " << c.rows << " cols " << c.cols << " mode " << mode);
    set_gemv_legacy(mode == 1);
    force_gemv_isa(mode == 2 ? GemvIsa::Portable : mode == 3 ? GemvIsa::Avx2 : GemvIsa::Auto);
    gemv_stored(parts, x.data(), kernel_threads());
    if (mode == 0) y_auto = y;
    // The AVX-512 loop keeps the AVX2 loop's lanes and sums: the same bits (where the CPU has both).
    if (mode == 3 && gemv_isa() == GemvIsa::Avx2) CHECK(y == y_auto);
    double worst = 0;  // largest |y - ref| / (sum |w x|) over the rows
    for (int64_t r = 0; r < c.rows + rows2; ++r) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < c.cols; ++i) {
        ref += static_cast<double>(wq[r * c.cols + i]) * x[i];
        mag += std::abs(static_cast<double>(wq[r * c.cols + i]) * x[i]);
      }
      worst = std::max(worst, std::abs(y[r] - ref) / std::max(mag, 1e-30));
    }
    CHECK(worst <= kSumRounding);
  }
  set_gemv_legacy(false);
  force_gemv_isa(GemvIsa::Auto);
}

}  // namespace

TEST_CASE("gemv_stored matches a double-precision reference for every stored dtype and kernel") {
  std::mt19937 rng(15);
  for (DType t : {DType::BF16, DType::F16, DType::F32})
    for (const Case& c : {Case{t, 1, 1}, Case{t, 5, 7}, Case{t, 33, 64}, Case{t, 70, 100}, Case{t, 129, 896},
                          Case{t, 300, 4864}, Case{t, 1000, 72}, Case{t, 9, 9000}, Case{t, 12, 14336}})
      check_gemv(c, rng);
}
