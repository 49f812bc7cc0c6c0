// WaterSIC / ZSIC (ALGORITHMS.md §5). Layout: the whitened targets Y and the codes are kept
// column-major ([n][rows]) so that the per-column rounding and the rank-1 interference updates
// are contiguous, vectorizable loops.
#include "core/quant/watersic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

constexpr const char* kWhere = "watersic";
constexpr double kSearchLo = 1e-6, kSearchHi = 1e3;  // ModelOpt's bracket for c
constexpr int kSearchIters = 30;
constexpr int kRefineIters = 40;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// §5.3: 1e-4 for R <= 5, a quarter of that per extra bit above 5.
double damp_pct(double rate) { return 1e-4 * std::pow(4.0, -std::max(0.0, rate - 5.0)); }

double to_fp16(double x) { return static_cast<double>(round_to_f16(static_cast<float>(x))); }

// Round half to even (numpy rint): the FPU's default mode via the 1.5·2^52 trick for |v| < 2^51,
// which vectorizes; libm for the rest.
inline double rint_d(double v) {
  constexpr double magic = 6755399441055744.0;
  return std::fabs(v) < 2251799813685248.0 ? (v + magic) - magic : std::nearbyint(v);
}

void check_options(const WaterSicOptions& o) {
  const std::string problem = check_watersic_options(o);
  if (!problem.empty()) fail(kWhere, "{}", problem);
}

void check_shape(int a, int n) {
  if (a < 1 || n < 1) fail(kWhere, "empty matrix ({} rows x {} columns)", a, n);
}

void check_finite(const double* x, size_t count, const char* what) {
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i])) fail(kWhere, "{} contains a non-finite value at index {}", what, i);
}

// In-place Cholesky of a symmetric positive definite [n, n] matrix; lower triangle = L, upper
// zeroed. False when a pivot is not positive.
bool cholesky(std::vector<double>& h, int n) {
  for (int j = 0; j < n; ++j) {
    double* rj = &h[size_t(j) * n];
    double s = rj[j];
    for (int k = 0; k < j; ++k) s -= rj[k] * rj[k];
    if (!(s > 0)) return false;
    const double d = std::sqrt(s);
    rj[j] = d;
    for (int i = j + 1; i < n; ++i) {
      double* ri = &h[size_t(i) * n];
      double t = ri[j];
      for (int k = 0; k < j; ++k) t -= ri[k] * rj[k];
      ri[j] = t / d;
    }
    for (int k = j + 1; k < n; ++k) rj[k] = 0;
  }
  return true;
}

// A stored column permutation of n entries: n · ceil(log2 n) bits (the state's and the coder's).
uint64_t permutation_bits(int n) {
  uint64_t b = 0;
  while ((uint64_t(1) << b) < uint64_t(n)) ++b;
  return uint64_t(n) * b;
}

// Y = W_p Σ_p L^{-T}, i.e. column j of Y is Σ_k X[j][k] W_p[:, k] (X = L^{-1} Σ_p), for `a` rows given
// column-major ([n][a]). Shared by the batch pass and the streaming coder (a = 1), so both sum in
// the same order and a calibration row whitens to the same bits either way.
void whiten(const std::vector<double>& x, int n, const double* wt, int a, double* y0t) {
  std::fill(y0t, y0t + size_t(n) * a, 0.0);
  // Row blocks keep the W and Y slices being combined in cache (n columns x 256 rows each).
  constexpr int kBlock = 256;
  for (int r0 = 0; r0 < a; r0 += kBlock) {
    const int r1 = std::min(a, r0 + kBlock);
    for (int j = 0; j < n; ++j) {
      double* y = &y0t[size_t(j) * a];
      for (int k = 0; k < n; ++k) {
        const double m = x[size_t(j) * n + k];
        if (m == 0) continue;
        const double* wc = &wt[size_t(k) * a];
        for (int r = r0; r < r1; ++r) y[r] += m * wc[r];
      }
    }
  }
}

// The ZSIC step at coding position i, also shared with the streaming coder: round column i of the
// residual targets (`rows` values) with step d ...
inline void round_column(const double* y, int rows, double d, double* z) {
#pragma omp simd
  for (int r = 0; r < rows; ++r) z[r] = rint_d(y[r] / d);
}

// ... then subtract its codes' interference s·L[i, j]·z from the columns j < i still to be coded.
void subtract_interference(const std::vector<double>& L, int n, int i, double s, const double* z, int rows, double* work) {
  if (s == 0) return;
  for (int j = 0; j < i; ++j) {
    const double f = s * L[size_t(i) * n + j];
    if (f == 0) continue;
    double* yj = &work[size_t(j) * rows];
    for (int r = 0; r < rows; ++r) yj[r] -= f * z[r];
  }
}

// Everything about a head that does not depend on c.
struct Prepared {
  int a = 0, n = 0;
  std::vector<int32_t> order;   // coding position k -> original column
  std::vector<double> sigma_p;  // Σ in coding order, undamped [n, n]
  std::vector<double> L;        // Cholesky factor of Σ_p + δI [n, n]
  std::vector<double> x;        // L^{-1} Σ_p [n, n]: the whitening Y = X W_p (per row)
  double damping = 0;
  std::vector<double> wt;       // coded W (row-weighted), column-major in coding order [n][a]
  std::vector<double> y0t;      // Y = W Σ L^{-T}, column-major in coding order [n][a]
};

// `damped` false: Σ is used as is (the A = I value fallback, so the step is exactly c).
Prepared prepare(const double* w, int a, int n, const double* sigma, bool sort_columns, bool damped,
                 double target_rate, const std::vector<double>& row_factor) {
  Prepared p;
  p.a = a;
  p.n = n;
  p.order.resize(n);
  std::iota(p.order.begin(), p.order.end(), 0);
  // Stable ascending sort by column energy (numpy argsort kind="stable"); the loop codes the
  // highest-energy column first.
  if (sort_columns)
    std::stable_sort(p.order.begin(), p.order.end(),
                     [&](int32_t x, int32_t y) { return sigma[size_t(x) * n + x] < sigma[size_t(y) * n + y]; });
  p.sigma_p.resize(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) p.sigma_p[size_t(i) * n + j] = sigma[size_t(p.order[i]) * n + p.order[j]];

  double mean_diag = 0;
  for (int i = 0; i < n; ++i) mean_diag += p.sigma_p[size_t(i) * n + i];
  mean_diag /= n;
  p.damping = damped ? damp_pct(target_rate) * mean_diag : 0.0;
  p.L = p.sigma_p;
  for (int i = 0; i < n; ++i) p.L[size_t(i) * n + i] += p.damping;
  if (!cholesky(p.L, n)) {
    // §5.3 retry rule: one more max(10δ, 1e-6) on the diagonal, then give up.
    const double extra = std::max(10 * p.damping, 1e-6);
    p.damping += extra;
    p.L = p.sigma_p;
    for (int i = 0; i < n; ++i) p.L[size_t(i) * n + i] += p.damping;
    if (!cholesky(p.L, n))
      fail(kWhere, "query Hessian is not positive definite even with damping {} (non-finite or degenerate queries?)",
           p.damping);
  }

  // Coded W, column-major in coding order, rows scaled by 1/row_factor (kl_aware: sqrt(w)).
  p.wt.resize(size_t(n) * a);
  for (int k = 0; k < n; ++k) {
    double* col = &p.wt[size_t(k) * a];
    const int src = p.order[k];
    for (int r = 0; r < a; ++r) col[r] = w[size_t(r) * n + src];
    if (!row_factor.empty())
      for (int r = 0; r < a; ++r) col[r] /= row_factor[r];
  }

  // X = L^{-1} Σ_p (forward substitution); Σ_p L^{-T} = Xᵀ, so column j of Y is Σ_k X[j][k] W_p[:, k].
  p.x = p.sigma_p;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      double s = p.sigma_p[size_t(i) * n + j];
      for (int k = 0; k < i; ++k) s -= p.L[size_t(i) * n + k] * p.x[size_t(k) * n + j];
      p.x[size_t(i) * n + j] = s / p.L[size_t(i) * n + i];
    }
  p.y0t.resize(size_t(n) * a);
  whiten(p.x, n, p.wt.data(), a, p.y0t.data());
  return p;
}

struct Pass {
  int rows = 0;
  std::vector<double> z;      // codes, column-major in coding order [n][rows]
  std::vector<double> alpha;  // [n] coding order
  std::vector<double> gamma;  // [n]
  std::vector<double> scale;  // [n] the α·γ the loop subtracted with (fp16 value when asked; 0 if z = 0)
  bool scale_outside_fp16 = false;  // some α·γ over/underflowed fp16 (the unrounded value was used)
  double entropy = 0;
};

// Plug-in entropy (bits) of all codes pooled in one histogram.
double pooled_entropy(const std::vector<double>& z) {
  const size_t count = z.size();
  if (count == 0) return 0;
  const auto [mn_it, mx_it] = std::minmax_element(z.begin(), z.end());
  const double lo = *mn_it, range = *mx_it - *mn_it;
  double sum_clogc = 0;
  auto add = [&](double cnt) {
    if (cnt > 0) sum_clogc += cnt * std::log2(cnt);
  };
  if (range < double(std::min<size_t>(4 * count + 1024, size_t(1) << 24))) {
    std::vector<uint32_t> hist(size_t(range) + 1, 0);
    for (double v : z) ++hist[size_t(v - lo)];
    for (uint32_t h : hist) add(h);
  } else {  // very fine steps (the low end of the bracket): sort instead of a huge histogram
    std::vector<double> s(z);
    std::sort(s.begin(), s.end());
    size_t run = 1;
    for (size_t i = 1; i <= s.size(); ++i) {
      if (i < s.size() && s[i] == s[i - 1]) {
        ++run;
      } else {
        add(double(run));
        run = 1;
      }
    }
  }
  const double total = double(count);
  return std::max(0.0, std::log2(total) - sum_clogc / total);
}

// One ZSIC pass (§5.4) over the rows in `y0t` ([n][rows] column-major), step c.
void zsic_pass(const Prepared& p, const double* y0t, int rows, double c, bool lmmse, bool fp16_side,
               std::vector<double>& work, Pass& out) {
  const int n = p.n;
  work.assign(y0t, y0t + size_t(n) * rows);
  out.rows = rows;
  out.z.resize(size_t(n) * rows);
  out.alpha.resize(n);
  out.gamma.assign(n, 1.0);
  out.scale.resize(n);
  out.scale_outside_fp16 = false;
  for (int i = n - 1; i >= 0; --i) {
    const double lii = p.L[size_t(i) * n + i];
    const double alpha = c / lii;
    const double d = alpha * lii;  // == c up to an ulp; computed as ModelOpt does
    const double* y = &work[size_t(i) * rows];
    double* z = &out.z[size_t(i) * rows];
    round_column(y, rows, d, z);
    double zz = 0, zy = 0;
#pragma omp simd reduction(+ : zz, zy)
    for (int r = 0; r < rows; ++r) {
      zz += z[r] * z[r];
      zy += z[r] * y[r];
    }
    double gamma = 1.0;
    if (lmmse && zz > 1e-20) gamma = zy / (d * zz);
    double s = gamma * alpha;
    if (zz == 0) {
      s = 0;  // nothing to subtract or to reconstruct; avoids storing a huge unused step
    } else if (fp16_side) {
      // Out of fp16 range happens at extreme probes of the search; only the final pass must fit.
      const double h = to_fp16(s);
      if (std::isfinite(h) && (h != 0 || s == 0))
        s = h;
      else
        out.scale_outside_fp16 = true;
    }
    out.alpha[i] = alpha;
    out.gamma[i] = gamma;
    out.scale[i] = s;
    subtract_interference(p.L, n, i, s, z, rows, work.data());
  }
  out.entropy = pooled_entropy(out.z);
}

double rate_of(const Pass& pass, int n) { return pass.entropy + 16.0 / pass.rows + 16.0 / n; }

// ModelOpt's alternating diagonal rescaler (§5.5) on the final pass, in coding order.
// Returns t [a]; updates pass.gamma.
std::vector<double> rescale(const Prepared& p, Pass& pass, int iters) {
  const int a = p.a, n = p.n;
  const std::vector<double>& sig = p.sigma_p;
  // Row-major copies: Ŵ₀ = Z diag(α), W, and WΣ.
  std::vector<double> w0(size_t(a) * n), wr(size_t(a) * n), ws(size_t(a) * n, 0.0);
  for (int k = 0; k < n; ++k)
    for (int r = 0; r < a; ++r) {
      w0[size_t(r) * n + k] = pass.z[size_t(k) * a + r] * pass.alpha[k];
      wr[size_t(r) * n + k] = p.wt[size_t(k) * a + r];
    }
  for (int r = 0; r < a; ++r)
    for (int k = 0; k < n; ++k) {
      const double v = wr[size_t(r) * n + k];
      if (v == 0) continue;
      for (int j = 0; j < n; ++j) ws[size_t(r) * n + j] += v * sig[size_t(k) * n + j];
    }
  std::vector<double> t(a, 1.0), srow(n), ssig(n);
  for (int it = 0; it < iters; ++it) {
    // t-step: exact per-row minimizer of ||(W_r - t S_r) A||² with S = Ŵ₀ diag(γ).
    for (int r = 0; r < a; ++r) {
      for (int k = 0; k < n; ++k) srow[k] = w0[size_t(r) * n + k] * pass.gamma[k];
      std::fill(ssig.begin(), ssig.end(), 0.0);
      for (int k = 0; k < n; ++k) {
        if (srow[k] == 0) continue;
        for (int j = 0; j < n; ++j) ssig[j] += srow[k] * sig[size_t(k) * n + j];
      }
      double num = 0, den = 0;
      for (int j = 0; j < n; ++j) {
        num += ssig[j] * wr[size_t(r) * n + j];
        den += ssig[j] * srow[j];
      }
      t[r] = den > 0 ? num / den : 1.0;
    }
    // γ-step: diagonal approximation (ignores off-diagonal Σ, so not guaranteed to descend).
    for (int k = 0; k < n; ++k) {
      double num = 0, den = 0;
      for (int r = 0; r < a; ++r) {
        const double tw = t[r] * w0[size_t(r) * n + k];
        num += tw * ws[size_t(r) * n + k];
        den += tw * tw;
      }
      den *= sig[size_t(k) * n + k];
      if (den > 0) pass.gamma[k] = num / den;
    }
  }
  return t;
}

std::vector<int> sample_rows(int a, double frac, uint64_t seed) {
  const double f = frac > 0 ? frac : std::min(0.1, 1000.0 / a);
  const int count = std::min(a, std::max(4, static_cast<int>(std::floor(a * f))));
  std::vector<int> idx(a);
  std::iota(idx.begin(), idx.end(), 0);
  if (count == a) return idx;
  std::mt19937_64 rng(seed);  // partial Fisher-Yates; our own index draw keeps it identical across libstdc++ versions
  for (int j = 0; j < count; ++j) {
    const int pick = j + static_cast<int>(rng() % uint64_t(a - j));
    std::swap(idx[j], idx[pick]);
  }
  idx.resize(count);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Pass -> state in original column order (row factors applied by the caller).
WaterSicState to_state(const Prepared& p, const Pass& pass, bool keep_perm) {
  const int a = p.a, n = p.n;
  WaterSicState s;
  s.rows = a;
  s.cols = n;
  s.codes.resize(size_t(a) * n);
  s.alpha.resize(n);
  s.gamma.resize(n);
  s.column_scale.resize(n);
  double zmin = 0, zmax = 0;
  if (!pass.z.empty()) {
    const auto [lo, hi] = std::minmax_element(pass.z.begin(), pass.z.end());
    zmin = *lo;
    zmax = *hi;
  }
  if (zmin < std::numeric_limits<int32_t>::min() || zmax > std::numeric_limits<int32_t>::max())
    fail(kWhere, "codes exceed int32 (step c too fine for the data; lower target_rate)");
  for (int k = 0; k < n; ++k) {
    const int j = p.order[k];
    s.alpha[j] = pass.alpha[k];
    s.gamma[j] = pass.gamma[k];
    s.column_scale[j] = pass.scale[k];
    for (int r = 0; r < a; ++r) s.codes[size_t(r) * n + j] = static_cast<int32_t>(pass.z[size_t(k) * a + r]);
  }
  if (keep_perm) s.perm = p.order;
  s.damping = p.damping;
  s.entropy = pass.entropy;
  s.rate = rate_of(pass, n);
  const double range = zmax - zmin;
  int width = 0;
  while (std::ldexp(1.0, width) < range + 1) ++width;
  s.code_width = width;
  s.fixed_width_rate = width + 16.0 / a + 16.0 / n;
  return s;
}

// Rescaler + row factors on top of the final pass; `row_factor` empty = all 1.
WaterSicState finish(const Prepared& p, Pass& pass, const WaterSicOptions& o, bool keep_perm,
                     const std::vector<double>& row_factor) {
  if (pass.scale_outside_fp16)
    fail(kWhere, "a column step does not fit in fp16 (data scale out of fp16 range; turn fp16_side_info off)");
  std::vector<double> t;
  if (o.n_rescaler_iters > 0) {
    t = rescale(p, pass, o.n_rescaler_iters);
    for (int k = 0; k < p.n; ++k) {
      const double* z = &pass.z[size_t(k) * p.a];
      if (std::all_of(z, z + p.a, [](double v) { return v == 0; })) continue;  // stays 0
      double s = pass.alpha[k] * pass.gamma[k];
      if (o.fp16_side_info) s = to_fp16(s);
      pass.scale[k] = s;
    }
  }
  WaterSicState s = to_state(p, pass, keep_perm);
  if (!t.empty() || !row_factor.empty()) {
    s.row_scale.assign(p.a, 1.0);
    for (int r = 0; r < p.a; ++r) {
      double f = (t.empty() ? 1.0 : t[r]) * (row_factor.empty() ? 1.0 : row_factor[r]);
      if (o.fp16_side_info) f = to_fp16(f);
      s.row_scale[r] = f;
    }
  }
  for (double v : s.column_scale)
    if (!std::isfinite(v)) fail(kWhere, "non-finite column scale (degenerate rescaler input)");
  for (double v : s.row_scale)
    if (!std::isfinite(v)) fail(kWhere, "non-finite row scale (degenerate rescaler input)");
  return s;
}

// The streaming coder of a finished pass (see WaterSicCoder): everything but the codes.
WaterSicCoder make_coder(const Prepared& p, const Pass& pass, const WaterSicState& s) {
  if (!s.row_scale.empty())
    fail(kWhere, "the streaming coder has no per-row factors (kl_aware and n_rescaler_iters need the whole matrix)");
  WaterSicCoder c;
  const int n = p.n;
  c.n = n;
  c.sorted = !s.perm.empty();
  c.order = p.order;
  c.x = p.x;
  c.L = p.L;
  c.step.resize(n);
  for (int k = 0; k < n; ++k) c.step[k] = pass.alpha[k] * p.L[size_t(k) * n + k];  // zsic_pass's d, same expression
  c.scale = pass.scale;
  c.column_scale = s.column_scale;
  c.code_width = s.code_width;
  if (c.code_width > 31) fail(kWhere, "codes need {} bits, too many for the streaming coder (lower target_rate)", c.code_width);
  const auto [lo, hi] = std::minmax_element(s.codes.begin(), s.codes.end());
  const int64_t spare = (int64_t(1) << c.code_width) - 1 - (int64_t(*hi) - *lo);
  c.code_lo = static_cast<int32_t>(std::max<int64_t>(std::numeric_limits<int32_t>::min(), int64_t(*lo) - spare / 2));
  c.code_hi = static_cast<int32_t>(std::min<int64_t>(std::numeric_limits<int32_t>::max(),
                                                     int64_t(c.code_lo) + (int64_t(1) << c.code_width) - 1));
  return c;
}

WaterSicState quantize_impl(const double* w, int a, int n, const double* sigma, const WaterSicOptions& o,
                            const double* row_weight, bool damped, bool sort_columns, WaterSicCoder* coder) {
  const auto t0 = Clock::now();
  check_options(o);
  check_shape(a, n);
  check_finite(w, size_t(a) * n, "matrix to quantize");
  check_finite(sigma, size_t(n) * n, "query Hessian");

  // Row factors f_r = 1/sqrt(w_r): rows are coded as W_r / f_r and reconstructed as f_r · Ŵ_r.
  // With fp16 side info, f_r is rounded first so that the decoder's factor is the encoder's.
  std::vector<double> row_factor;
  if (row_weight) {
    row_factor.resize(a);
    for (int r = 0; r < a; ++r) {
      if (!(row_weight[r] > 0) || !std::isfinite(row_weight[r]))
        fail(kWhere, "row importance {} at row {} is not a positive number", row_weight[r], r);
      row_factor[r] = 1.0 / std::sqrt(row_weight[r]);
      if (o.fp16_side_info) row_factor[r] = to_fp16(row_factor[r]);
    }
  }
  const Prepared p = prepare(w, a, n, sigma, sort_columns, damped, o.target_rate, row_factor);

  std::vector<double> work;
  Pass pass;
  int passes = 0;
  auto full_rate = [&](double c) {
    zsic_pass(p, p.y0t.data(), a, c, o.use_lmmse, o.fp16_side_info, work, pass);
    ++passes;
    return rate_of(pass, n);
  };

  // Bisection in log space on the row subsample (§5.6, ModelOpt binary_search_c).
  const std::vector<int> rows = sample_rows(a, o.sample_frac, o.seed);
  const int m = static_cast<int>(rows.size());
  std::vector<double> ysub;
  const double* ys = p.y0t.data();
  if (m < a) {
    ysub.resize(size_t(n) * m);
    for (int k = 0; k < n; ++k)
      for (int i = 0; i < m; ++i) ysub[size_t(k) * m + i] = p.y0t[size_t(k) * a + rows[i]];
    ys = ysub.data();
  }
  double lo = std::log(kSearchLo), hi = std::log(kSearchHi);
  for (int it = 0; it < kSearchIters; ++it) {
    const double mid = 0.5 * (lo + hi);
    zsic_pass(p, ys, m, std::exp(mid), o.use_lmmse, o.fp16_side_info, work, pass);
    ++passes;
    if (rate_of(pass, n) > o.target_rate)
      lo = mid;  // too many bits: coarser step
    else
      hi = mid;
  }
  double c = std::exp(0.5 * (lo + hi));

  Pass best;  // the full-data pass at the chosen c (kept from the refinement, else run below)
  if (o.refine_on_all_rows) {
    // [lab] Re-search on all rows until the achieved full-data rate is within tolerance (the rate
    // is a step function of c, so this may be impossible; then keep the closest c). Aim at a fifth
    // of the tolerance: a few extra passes are cheap and keep rate curves smooth.
    const double target = o.target_rate, tol = o.rate_tolerance / 5;
    double best_c = c, best_err = std::numeric_limits<double>::infinity();
    // Bracket in ln c: rate(e^l) > target >= rate(e^h), where known.
    bool have_l = false, have_h = false;
    double l = 0, h = 0;
    auto probe = [&](double lc) {
      const double r = full_rate(std::exp(lc));
      if (std::fabs(r - target) < best_err) {
        best_err = std::fabs(r - target);
        best_c = std::exp(lc);
        std::swap(best, pass);
      }
      if (r > target) {
        if (!have_l || lc > l) l = lc;
        have_l = true;
      } else {
        if (!have_h || lc < h) h = lc;
        have_h = true;
      }
      return r;
    };
    // Secant steps in ln c, starting from the high-resolution slope: one bit per doubling of c.
    double lc = std::log(c), r = probe(lc), slope = -1 / std::log(2.0);
    for (int it = 0; it < 4 && best_err > tol; ++it) {
      double next = lc + (target - r) / slope;
      if (have_l && have_h && !(next > l && next < h)) next = 0.5 * (l + h);
      const double rn = probe(next);
      if (rn != r && next != lc)
        slope = std::clamp((rn - r) / (next - lc), -8 / std::log(2.0), -0.125 / std::log(2.0));
      lc = next;
      r = rn;
    }
    if (best_err > tol) {  // fall back to bracketing + bisection
      // Far beyond ModelOpt's [1e-6, 1e3]: c scales like |k|·sqrt(eig Σ)·2^-R, which leaves that
      // bracket for large query norms or many query rows (walking out costs a few passes).
      constexpr double kMaxLog = 69.0, kMinLog = -69.0;  // c in [1e-30, 1e30]
      for (double step = std::log(2.0); !have_h && l < kMaxLog; step *= 2) probe(std::min(kMaxLog, l + step));
      for (double step = std::log(2.0); !have_l && h > kMinLog; step *= 2) probe(std::max(kMinLog, h - step));
      for (int it = 0; it < kRefineIters && best_err > tol && have_l && have_h; ++it) probe(0.5 * (l + h));
    }
    c = best_c;
  } else {
    zsic_pass(p, p.y0t.data(), a, c, o.use_lmmse, o.fp16_side_info, work, best);
    ++passes;
  }

  WaterSicState s = finish(p, best, o, sort_columns, row_factor);
  if (coder) *coder = make_coder(p, best, s);
  s.c = c;
  s.target_rate = o.target_rate;
  s.rate_met = std::fabs(s.rate - o.target_rate) <= o.rate_tolerance;
  s.search_rows = m;
  s.passes = passes;
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace

std::string check_watersic_options(const WaterSicOptions& o) {
  if (!(o.target_rate > 0) || !std::isfinite(o.target_rate))
    return fmt::format("target_rate must be a positive number, got {}", o.target_rate);
  if (!(o.sample_frac >= 0 && o.sample_frac <= 1))
    return fmt::format("sample_frac must be in (0, 1] (0 = auto), got {}", o.sample_frac);
  if (o.n_rescaler_iters < 0) return fmt::format("n_rescaler_iters must be >= 0, got {}", o.n_rescaler_iters);
  if (!(o.rate_tolerance > 0)) return fmt::format("rate_tolerance must be > 0, got {}", o.rate_tolerance);
  if (!(o.importance_clip >= 1) || !std::isfinite(o.importance_clip))
    return fmt::format("importance_clip must be >= 1, got {}", o.importance_clip);
  if (o.sequence_length < 0) return fmt::format("sequence_length must be >= 0, got {}", o.sequence_length);
  return {};
}

WaterSicOptions watersic_modelopt_options() {
  WaterSicOptions o;
  o.queries = WaterSicQueries::SameIndex;
  o.causal_importance = false;
  o.refine_on_all_rows = false;
  o.fp16_side_info = false;
  return o;
}

double WaterSicState::entropy_code_bits() const { return double(rows) * double(cols) * entropy; }

uint64_t WaterSicState::fixed_width_code_bits() const {
  return uint64_t(rows) * uint64_t(cols) * uint64_t(code_width);
}

uint64_t WaterSicState::perm_bits() const { return perm.empty() ? 0 : permutation_bits(cols); }

std::vector<double> reconstruct(const WaterSicState& s) {
  std::vector<double> out(size_t(s.rows) * s.cols);
  for (int r = 0; r < s.rows; ++r) {
    const double f = s.row_scale.empty() ? 1.0 : s.row_scale[r];
    const int32_t* z = &s.codes[size_t(r) * s.cols];
    double* o = &out[size_t(r) * s.cols];
    for (int j = 0; j < s.cols; ++j) o[j] = f * (double(z[j]) * s.column_scale[j]);
  }
  return out;
}

std::vector<double> query_gram(const std::vector<const float*>& queries, int tokens, int n) {
  if (tokens < 0) fail(kWhere, "negative query count {}", tokens);
  check_shape(1, n);
  std::vector<double> sig(size_t(n) * n, 0.0), q(n);
  for (const float* head : queries)
    for (int t = 0; t < tokens; ++t) {
      const float* row = head + size_t(t) * n;
      for (int j = 0; j < n; ++j) q[j] = row[j];
      for (int i = 0; i < n; ++i) {
        const double qi = q[i];
        double* si = &sig[size_t(i) * n];
        for (int j = 0; j <= i; ++j) si[j] += qi * q[j];
      }
    }
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) sig[size_t(i) * n + j] = sig[size_t(j) * n + i];
  return sig;
}

std::vector<double> key_importance(const double* k, int a, int n, const std::vector<const float*>& queries,
                                   int tokens, const WaterSicOptions& o) {
  check_options(o);
  check_shape(a, n);
  if (queries.empty()) fail(kWhere, "kl_aware importance needs at least one query head");
  if (o.causal_importance && tokens != a)
    fail(kWhere, "causal importance needs one query per key token ({} queries, {} keys)", tokens, a);
  const int seq = o.sequence_length > 0 ? o.sequence_length : a;
  const double scale = 1.0 / std::sqrt(double(n));
  std::vector<double> w(a, 0.0), logit(a), q(n);
  for (const float* head : queries)
    for (int i = 0; i < tokens; ++i) {
      const float* row = head + size_t(i) * n;
      for (int j = 0; j < n; ++j) q[j] = row[j];
      // Keys query i sees: its own sequence up to itself (lab), or all a keys (ModelOpt).
      const int first = o.causal_importance ? (i / seq) * seq : 0;
      const int last = o.causal_importance ? i : a - 1;
      double mx = -std::numeric_limits<double>::infinity();
      for (int r = first; r <= last; ++r) {
        const double* kr = k + size_t(r) * n;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < n; ++j) dot += q[j] * kr[j];
        logit[r] = dot * scale;
        mx = std::max(mx, logit[r]);
      }
      double sum = 0;
      for (int r = first; r <= last; ++r) {
        logit[r] = std::exp(logit[r] - mx);
        sum += logit[r];
      }
      for (int r = first; r <= last; ++r) w[r] += logit[r] / sum;
    }
  const double mean = std::accumulate(w.begin(), w.end(), 0.0) / a;
  if (!(mean > 0) || !std::isfinite(mean)) fail(kWhere, "attention importance is degenerate (mean {})", mean);
  for (double& v : w) v = std::clamp(v / mean, 1.0 / o.importance_clip, o.importance_clip);
  return w;
}

WaterSicState zsic_fixed_step(const double* w, int a, int n, const double* sigma, double c,
                              const WaterSicOptions& o, WaterSicCoder* coder) {
  const auto t0 = Clock::now();
  check_options(o);
  check_shape(a, n);
  if (!(c > 0) || !std::isfinite(c)) fail(kWhere, "step c must be a positive number, got {}", c);
  check_finite(w, size_t(a) * n, "matrix to quantize");
  check_finite(sigma, size_t(n) * n, "query Hessian");
  const Prepared p = prepare(w, a, n, sigma, o.sort_columns, true, o.target_rate, {});
  std::vector<double> work;
  Pass pass;
  zsic_pass(p, p.y0t.data(), a, c, o.use_lmmse, o.fp16_side_info, work, pass);
  WaterSicState s = finish(p, pass, o, o.sort_columns, {});
  if (coder) *coder = make_coder(p, pass, s);
  s.c = c;
  s.target_rate = o.target_rate;
  s.rate_met = std::fabs(s.rate - o.target_rate) <= o.rate_tolerance;
  s.search_rows = a;
  s.passes = 1;
  s.seconds = seconds_since(t0);
  return s;
}

WaterSicState watersic_quantize(const double* w, int a, int n, const double* sigma, const WaterSicOptions& o,
                                const double* row_weight, WaterSicCoder* coder) {
  return quantize_impl(w, a, n, sigma, o, row_weight, true, o.sort_columns, coder);
}

WaterSicState watersic_quantize_keys(const double* k, int a, int n, const std::vector<const float*>& queries,
                                     int tokens, const WaterSicOptions& o, WaterSicCoder* coder) {
  const auto t0 = Clock::now();
  check_options(o);
  check_shape(a, n);
  if (queries.empty() || tokens < 1) fail(kWhere, "keys need queries for the Hessian (got none)");
  const std::vector<double> sigma = query_gram(queries, tokens, n);
  std::vector<double> importance;
  if (o.kl_aware) importance = key_importance(k, a, n, queries, tokens, o);
  WaterSicState s =
      watersic_quantize(k, a, n, sigma.data(), o, importance.empty() ? nullptr : importance.data(), coder);
  s.seconds = seconds_since(t0);
  return s;
}

WaterSicState watersic_quantize_key_head(const KvDump& dump, int layer, int kv_head, const WaterSicOptions& o) {
  const DumpShape& sh = dump.shape;
  if (!dump.has_q() || sh.q_heads < 1)
    fail(kWhere, "the dump has no queries (layers.{{L}}.q); WaterSIC needs them for the key Hessian");
  if (layer < 0 || layer >= sh.layers || kv_head < 0 || kv_head >= sh.kv_heads)
    fail(kWhere, "no layer {} / KV head {} in a dump of {} layers x {} KV heads", layer, kv_head, sh.layers,
         sh.kv_heads);
  std::vector<const float*> queries;
  if (o.queries == WaterSicQueries::Group) {
    const int g = sh.group();
    if (g < 1) fail(kWhere, "{} query heads cannot be grouped over {} KV heads", sh.q_heads, sh.kv_heads);
    for (int j = kv_head * g; j < (kv_head + 1) * g; ++j) queries.push_back(dump.q(layer, j));
  } else {
    if (kv_head >= sh.q_heads) fail(kWhere, "no query head {} for ModelOpt's same-index pairing", kv_head);
    queries.push_back(dump.q(layer, kv_head));
  }
  const float* kf = dump.k(layer, kv_head);
  std::vector<double> k(kf, kf + dump.head_elems());
  return watersic_quantize_keys(k.data(), sh.tokens, sh.head_dim, queries, sh.tokens, o);
}

WaterSicState watersic_quantize_values(const double* v, int a, int n, const WaterSicOptions& o, WaterSicCoder* coder) {
  std::vector<double> identity(size_t(std::max(n, 0)) * std::max(n, 0), 0.0);
  for (int i = 0; i < n; ++i) identity[size_t(i) * n + i] = 1.0;
  WaterSicOptions vo = o;
  vo.kl_aware = false;
  return quantize_impl(v, a, n, identity.data(), vo, nullptr, false, false, coder);
}

WaterSicOptions watersic_options_of(const WatersicPolicy& wp) {
  WaterSicOptions wo = wp.modelopt_queries ? watersic_modelopt_options() : WaterSicOptions{};
  wo.target_rate = wp.target_rate;
  wo.kl_aware = wp.kl_aware;
  wo.importance_clip = wp.importance_clip;
  wo.use_lmmse = wp.use_lmmse;
  wo.n_rescaler_iters = wp.n_rescaler_iters;
  wo.sample_frac = wp.sample_frac;
  wo.sort_columns = wp.sort_columns;
  wo.seed = wp.seed;
  return wo;
}

int WaterSicCoder::code_row(const double* row, int32_t* z) const {
  // Per-thread scratch: replay codes one row per head per decode step.
  thread_local std::vector<double> wp, y, zc;
  wp.resize(n);
  y.resize(n);
  zc.resize(n);
  for (int k = 0; k < n; ++k) wp[k] = row[order[k]];
  whiten(x, n, wp.data(), 1, y.data());
  int clamped = 0;
  for (int i = n - 1; i >= 0; --i) {
    double q;
    round_column(&y[i], 1, step[i], &q);
    if (!(q >= code_lo)) {  // also NaN
      q = code_lo;
      ++clamped;
    } else if (q > code_hi) {
      q = code_hi;
      ++clamped;
    }
    zc[i] = q;
    subtract_interference(L, n, i, scale[i], &zc[i], 1, y.data());
  }
  for (int k = 0; k < n; ++k) z[order[k]] = static_cast<int32_t>(zc[k]);
  return clamped;
}

void WaterSicCoder::decode_row(const int32_t* z, double* out) const {
  for (int j = 0; j < n; ++j) out[j] = double(z[j]) * column_scale[j];  // reconstruct()'s product (row factor 1)
}

uint64_t WaterSicCoder::side_bits() const { return 16ull * uint64_t(n) + (sorted ? permutation_bits(n) : 0) + 32; }

}  // namespace kvscope
