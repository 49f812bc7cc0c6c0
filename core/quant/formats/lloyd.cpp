// 1-D Lloyd-Max design; see lloyd.h.
#include "core/quant/formats/lloyd.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "core/util/error.h"

namespace kvscope::formats {

namespace {

// The density grid: n cell midpoints on [-L, L] with L = min(1, 14/sqrt(dim)) (beyond 14 standard
// deviations the mass is below 1e-40), weights f_d(t) dt normalized to sum 1.
void sphere_grid(int dim, std::vector<double>* t, std::vector<double>* w) {
  const int n = 40000;
  const double L = std::min(1.0, 14.0 / std::sqrt(static_cast<double>(dim)));
  const double dt = 2 * L / n, ex = 0.5 * (dim - 3);
  t->resize(n);
  w->resize(n);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const double x = -L + (i + 0.5) * dt;
    (*t)[i] = x;
    (*w)[i] = std::exp(ex * std::log1p(-x * x));
    sum += (*w)[i];
  }
  for (double& v : *w) v /= sum;
}

}  // namespace

namespace {

// Lloyd iterations given the weight and first moment of the points below a boundary (cum(b) returns
// {mass, moment} of everything <= b, non-decreasing in b). Cells are bounded by midpoints of
// neighbouring centroids; each centroid moves to its cell's mean (Jacobi update).
template <class Cum>
std::vector<double> lloyd_iterate(std::vector<double> c, double range, Cum cum) {
  const int k = static_cast<int>(c.size());
  std::vector<double> next(c.size());
  for (int it = 0; it < 300; ++it) {
    double moved = 0, prev_m = 0, prev_x = 0;
    for (int j = 0; j < k; ++j) {
      double m, x;
      if (j + 1 < k) {
        const auto [mm, xx] = cum(0.5 * (c[j] + c[j + 1]));
        m = mm, x = xx;
      } else {
        const auto [mm, xx] = cum(INFINITY);
        m = mm, x = xx;
      }
      const double cw = m - prev_m;
      next[j] = cw > 0 ? (x - prev_x) / cw : c[j];  // an empty cell keeps its centroid
      moved = std::max(moved, std::fabs(next[j] - c[j]));
      prev_m = m, prev_x = x;
    }
    c.swap(next);
    std::sort(c.begin(), c.end());
    if (moved <= 1e-10 * range) break;
  }
  return c;
}

}  // namespace

std::vector<double> lloyd_1d(const std::vector<double>& x, const std::vector<double>& w, int k) {
  const size_t n = x.size();
  if (n == 0 || k < 1 || w.size() != n) fail("lloyd", "needs points, matching weights and k >= 1 (got {} points, k {})", n, k);
  // Prefix sums of w and w*x make a cell's mean O(log n) to find.
  std::vector<double> W(n + 1, 0.0), WX(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) W[i + 1] = W[i] + w[i], WX[i + 1] = WX[i] + w[i] * x[i];
  std::vector<double> c(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) {  // weighted quantile (j + 1/2)/k
    const double target = W[n] * (j + 0.5) / k;
    const size_t i = static_cast<size_t>(std::lower_bound(W.begin() + 1, W.end(), target) - (W.begin() + 1));
    c[j] = x[std::min(i, n - 1)];
  }
  return lloyd_iterate(std::move(c), x[n - 1] - x[0], [&](double b) {
    const size_t i = static_cast<size_t>(std::upper_bound(x.begin(), x.end(), b) - x.begin());
    return std::pair<double, double>(W[i], WX[i]);
  });
}

namespace {

// Lloyd-Max for a density given as masses of n equal bins on [lo, lo + n*dt], uniform inside each
// bin, so cell masses and moments are exact integrals for any boundary (a discrete version stalls
// once the boundary corrections fall below the bin width, 0.3% short of the optimum levels).
std::vector<double> lloyd_density(double lo, double dt, const std::vector<double>& mass, int k) {
  const size_t n = mass.size();
  std::vector<double> W(n + 1, 0.0), WX(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) W[i + 1] = W[i] + mass[i], WX[i + 1] = WX[i] + mass[i] * (lo + (i + 0.5) * dt);
  auto cum = [&](double b) {
    if (!(b > lo)) return std::pair<double, double>(0.0, 0.0);
    const double pos = (b - lo) / dt;
    if (pos >= double(n)) return std::pair<double, double>(W[n], WX[n]);
    const size_t i = static_cast<size_t>(pos);
    const double f = pos - double(i), e = lo + double(i) * dt;
    return std::pair<double, double>(W[i] + mass[i] * f, WX[i] + mass[i] * f * 0.5 * (e + b));
  };
  std::vector<double> c(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) {  // quantile (j + 1/2)/k, bisected on the exact CDF
    double a = lo, b = lo + n * dt;
    for (int it = 0; it < 100; ++it) {
      const double mid = 0.5 * (a + b);
      (cum(mid).first < W[n] * (j + 0.5) / k ? a : b) = mid;
    }
    c[j] = 0.5 * (a + b);
  }
  return lloyd_iterate(std::move(c), n * dt, cum);
}

}  // namespace

const std::vector<float>& sphere_coordinate_codebook(int dim, int bits) {
  if (dim < 2 || bits < 1 || bits > 8) fail("turboquant", "codebook needs dim >= 2 and bits 1..8 (got dim {}, bits {})", dim, bits);
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::vector<float>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({dim, bits});
  if (it != cache.end()) return it->second;
  std::vector<double> t, w;
  sphere_grid(dim, &t, &w);
  const double dt = t[1] - t[0];
  const std::vector<double> c = lloyd_density(t[0] - 0.5 * dt, dt, w, 1 << bits);
  std::vector<float> cf(c.size());
  // The density is symmetric: average c_j and -c_{k-1-j} so the codebook is exactly symmetric.
  for (size_t j = 0; j < c.size(); ++j) cf[j] = static_cast<float>(0.5 * (c[j] - c[c.size() - 1 - j]));
  return cache.emplace(std::make_pair(dim, bits), std::move(cf)).first->second;
}

std::vector<float> kmeans_codebook(std::vector<float> samples, int bits) {
  if (samples.empty()) fail("kmeans", "no calibration samples");
  if (bits < 1 || bits > 8) fail("kmeans", "bits must be in 1..8 (got {})", bits);
  std::sort(samples.begin(), samples.end());
  const std::vector<double> x(samples.begin(), samples.end());
  const std::vector<double> w(x.size(), 1.0);
  const std::vector<double> c = lloyd_1d(x, w, 1 << bits);
  return std::vector<float>(c.begin(), c.end());
}

int nearest_centroid(const float* c, int k, float v) {
  int lo = 0, hi = k - 1;  // invariant: the answer is in [lo, hi]
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    // v belongs above mid when it is past the midpoint of c[mid] and c[mid + 1] (ties stay low).
    if (v > 0.5f * (c[mid] + c[mid + 1])) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

double sphere_coordinate_mse(int dim, const std::vector<float>& cb) {
  std::vector<double> t, w;
  sphere_grid(dim, &t, &w);
  double e = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const double q = cb[static_cast<size_t>(nearest_centroid(cb.data(), static_cast<int>(cb.size()), static_cast<float>(t[i])))];
    e += w[i] * (t[i] - q) * (t[i] - q);
  }
  return e;
}

}  // namespace kvscope::formats
