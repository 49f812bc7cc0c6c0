// ErrorSums::add follows the summation order written in core/metrics/error_lanes.h (the order the
// quantizer kernels reproduce while they encode): checked bit for bit against a plain scalar
// transcription of that text, on lengths around every chunk and block boundary.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "core/metrics/tensor_error.h"

using namespace kvscope;

namespace {

// The order of error_lanes.h, one element at a time.
ErrorSums scalar_order(const std::vector<float>& x, const std::vector<float>& y) {
  ErrorSums out;
  const size_t n = x.size(), whole = n / 16 * 16;  // elements past `whole` go to lane 0
  for (size_t b0 = 0; b0 < n; b0 += 256) {
    float err[16] = {}, ref[16] = {}, hat[16] = {}, dot[16] = {};
    float mx = 0;
    const size_t b1 = std::min(n, b0 + 256);
    for (size_t i = b0; i < b1; ++i) {
      const int l = i < whole ? static_cast<int>(i % 16) : 0;
      const float d = x[i] - y[i];
      err[l] += d * d;
      ref[l] += x[i] * x[i];
      hat[l] += y[i] * y[i];
      dot[l] += x[i] * y[i];
      const float a = std::fabs(d);
      mx = a > mx ? a : mx;
    }
    auto fold = [](const float* v) {
      float t[8], u[4];
      for (int l = 0; l < 8; ++l) t[l] = v[l] + v[l + 8];
      for (int l = 0; l < 4; ++l) u[l] = t[l] + t[l + 4];
      return (u[0] + u[2]) + (u[1] + u[3]);
    };
    out.err2 += fold(err);
    out.ref2 += fold(ref);
    out.hat2 += fold(hat);
    out.dot += fold(dot);
    out.max_abs = std::max(out.max_abs, static_cast<double>(mx));
    out.n += b1 - b0;
  }
  return out;
}

}  // namespace

TEST_CASE("ErrorSums::add sums in the order error_lanes.h documents", "[error_lanes]") {
  std::mt19937 g(17);
  std::normal_distribution<float> d(0, 3.0f);
  for (size_t n : {0, 1, 7, 15, 16, 17, 31, 255, 256, 257, 271, 512, 1000, 4099}) {
    std::vector<float> x(n), y(n);
    for (size_t i = 0; i < n; ++i) x[i] = d(g), y[i] = x[i] + 0.01f * d(g);
    const ErrorSums want = scalar_order(x, y);
    ErrorSums got;
    got.add(x.data(), y.data(), n);
    INFO("n = " << n);
    CHECK(got.err2 == want.err2);
    CHECK(got.ref2 == want.ref2);
    CHECK(got.hat2 == want.hat2);
    CHECK(got.dot == want.dot);
    CHECK(got.max_abs == want.max_abs);
    CHECK(got.n == want.n);
  }
}
