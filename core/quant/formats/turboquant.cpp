// TurboQuant and QJL; see turboquant.h.
#include "core/quant/formats/turboquant.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/quant/formats/lloyd.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope::formats {

namespace {

constexpr double kSqrtHalfPi = 1.2533141373155003;  // sqrt(pi / 2)

// N(0,1) draws from a seed: a splitmix64 stream (no seeding cost: quantizers are cheap to make) and
// Marsaglia's polar method, both written out so the matrices are the same on every standard library
// (std::normal_distribution's algorithm is implementation-defined).
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : state_(seed) {}
  double next() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    have_ = true;
    return u * f;
  }

 private:
  double uniform() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  }
  uint64_t state_;
  bool have_ = false;
  double spare_ = 0;
};

double norm2(const float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return std::sqrt(s);
}

}  // namespace

std::vector<float> random_orthogonal(int d, uint64_t seed) {
  if (d < 1) fail("rotation", "dimension must be positive (got {})", d);
  Gaussian g(seed);
  std::vector<double> a(static_cast<size_t>(d) * d);
  for (double& v : a) v = g.next();
  // Modified Gram-Schmidt on the rows: the Q factor of a Gaussian matrix with R's diagonal positive
  // is Haar-distributed.
  for (int i = 0; i < d; ++i) {
    double* ri = &a[static_cast<size_t>(i) * d];
    for (int j = 0; j < i; ++j) {
      const double* rj = &a[static_cast<size_t>(j) * d];
      double dot = 0;
      for (int t = 0; t < d; ++t) dot += ri[t] * rj[t];
      for (int t = 0; t < d; ++t) ri[t] -= dot * rj[t];
    }
    double n = 0;
    for (int t = 0; t < d; ++t) n += ri[t] * ri[t];
    n = std::sqrt(n);
    for (int t = 0; t < d; ++t) ri[t] /= n;
  }
  return std::vector<float>(a.begin(), a.end());
}

TurboQuantMse::TurboQuantMse(int dim, int bits, uint64_t seed)
    : dim_(dim), bits_(bits), rot_(random_orthogonal(dim, seed)), codebook_(&sphere_coordinate_codebook(dim, bits)) {}

float TurboQuantMse::encode(const float* x, uint8_t* idx) const {
  const float norm = round_to_f16(static_cast<float>(norm2(x, dim_)));
  const double inv = norm > 0 ? 1.0 / norm2(x, dim_) : 0.0;
  const float* c = codebook_->data();
  const int k = 1 << bits_;
  for (int i = 0; i < dim_; ++i) {
    const float* r = &rot_[static_cast<size_t>(i) * dim_];
    double y = 0;
    for (int t = 0; t < dim_; ++t) y += double(r[t]) * x[t];
    idx[i] = static_cast<uint8_t>(nearest_centroid(c, k, static_cast<float>(y * inv)));
  }
  return norm;
}

void TurboQuantMse::decode(const uint8_t* idx, float norm, float* out) const {
  const float* c = codebook_->data();
  std::vector<double> acc(static_cast<size_t>(dim_), 0.0);
  for (int i = 0; i < dim_; ++i) {  // out = Pi^T y~: accumulate row i of Pi times y~_i
    const double yi = c[idx[i]];
    const float* r = &rot_[static_cast<size_t>(i) * dim_];
    for (int t = 0; t < dim_; ++t) acc[t] += yi * r[t];
  }
  for (int t = 0; t < dim_; ++t) out[t] = static_cast<float>(norm * acc[t]);
}

Qjl::Qjl(int dim, int sketch_dim, uint64_t seed) : dim_(dim), m_(sketch_dim) {
  if (dim < 1 || sketch_dim < 1) fail("qjl", "dimension and sketch size must be positive (got {}, {})", dim, sketch_dim);
  Gaussian g(seed);
  s_.resize(static_cast<size_t>(m_) * dim_);
  for (float& v : s_) v = static_cast<float>(g.next());
}

float Qjl::encode(const float* x, uint8_t* signs) const {
  for (int i = 0; i < m_; ++i) {
    const float* r = &s_[static_cast<size_t>(i) * dim_];
    double y = 0;
    for (int t = 0; t < dim_; ++t) y += double(r[t]) * x[t];
    signs[i] = y >= 0 ? 1 : 0;
  }
  return round_to_f16(static_cast<float>(norm2(x, dim_)));
}

void Qjl::decode(const uint8_t* signs, float norm, float* out) const {
  std::vector<double> acc(static_cast<size_t>(dim_), 0.0);
  for (int i = 0; i < m_; ++i) {
    const double s = signs[i] ? 1.0 : -1.0;
    const float* r = &s_[static_cast<size_t>(i) * dim_];
    for (int t = 0; t < dim_; ++t) acc[t] += s * r[t];
  }
  const double f = kSqrtHalfPi / m_ * norm;
  for (int t = 0; t < dim_; ++t) out[t] = static_cast<float>(f * acc[t]);
}

double Qjl::estimate_dot(const float* q, const uint8_t* signs, float norm) const {
  double s = 0;
  for (int i = 0; i < m_; ++i) {
    const float* r = &s_[static_cast<size_t>(i) * dim_];
    double y = 0;
    for (int t = 0; t < dim_; ++t) y += double(r[t]) * q[t];
    s += signs[i] ? y : -y;
  }
  return kSqrtHalfPi / m_ * norm * s;
}

namespace {
int mse_stage_bits(int total_bits) {
  if (total_bits < 2) fail("turboquant", "the inner-product variant needs at least 2 bits (got {})", total_bits);
  return total_bits - 1;
}
}  // namespace

TurboQuantProd::TurboQuantProd(int dim, int total_bits, uint64_t seed)
    : mse_(dim, mse_stage_bits(total_bits), seed), qjl_(dim, dim, seed ^ 0x514A4C5F52455349ull /* "QJL_RESI" */) {}

void TurboQuantProd::encode(const float* x, TurboCode* code) const {
  const int d = mse_.dim();
  code->idx.resize(static_cast<size_t>(d));
  code->signs.resize(static_cast<size_t>(d));
  code->norm = mse_.encode(x, code->idx.data());
  std::vector<float> r(static_cast<size_t>(d));
  mse_.decode(code->idx.data(), code->norm, r.data());
  for (int t = 0; t < d; ++t) r[t] = x[t] - r[t];
  code->residual_norm = qjl_.encode(r.data(), code->signs.data());
}

void TurboQuantProd::decode(const TurboCode& code, float* out) const {
  const int d = mse_.dim();
  std::vector<float> r(static_cast<size_t>(d));
  mse_.decode(code.idx.data(), code.norm, out);
  qjl_.decode(code.signs.data(), code.residual_norm, r.data());
  for (int t = 0; t < d; ++t) out[t] += r[t];
}

TurboQuantSplit::TurboQuantSplit(int dim, std::vector<int> outlier, int outlier_bits, int base_bits, bool qjl_residual,
                                 uint64_t seed)
    : dim_(dim), outlier_(std::move(outlier)) {
  std::vector<bool> is_out(static_cast<size_t>(dim), false);
  for (int c : outlier_) {
    if (c < 0 || c >= dim || is_out[c]) fail("turboquant", "outlier channel {} is out of range or repeated (head_dim {})", c, dim);
    is_out[c] = true;
  }
  if (outlier_.size() == size_t(dim)) fail("turboquant", "all {} channels are outliers; leave some for the base set", dim);
  if (outlier_.size() == 1) fail("turboquant", "one outlier channel cannot be rotated; use 0 or at least 2");
  std::sort(outlier_.begin(), outlier_.end());
  for (int c = 0; c < dim; ++c) parts_[is_out[c] ? 0 : 1].channels.push_back(c);
  const int bits[2] = {outlier_bits, base_bits};
  for (int p = 0; p < 2; ++p) {
    const int n = static_cast<int>(parts_[p].channels.size());
    if (n == 0) continue;
    // Each instance has its own rotation and sketch: seeds seed (outliers) and seed + 1 (the rest).
    if (qjl_residual) parts_[p].prod = std::make_unique<TurboQuantProd>(n, bits[p], seed + p);
    else parts_[p].mse = std::make_unique<TurboQuantMse>(n, bits[p], seed + p);
  }
}

uint64_t TurboQuantSplit::bits_per_vector() const {
  uint64_t b = 0;
  for (const Part& p : parts_) {
    if (p.prod) b += p.prod->bits_per_vector();
    if (p.mse) b += p.mse->bits_per_vector();
  }
  return b;
}

void TurboQuantSplit::roundtrip(const float* x, float* out) const {
  std::vector<float> sub, rec;
  std::vector<uint8_t> idx;
  TurboCode code;
  for (const Part& p : parts_) {
    const size_t n = p.channels.size();
    if (n == 0) continue;
    sub.resize(n);
    rec.resize(n);
    for (size_t i = 0; i < n; ++i) sub[i] = x[p.channels[i]];
    if (p.prod) {
      p.prod->encode(sub.data(), &code);
      p.prod->decode(code, rec.data());
    } else {
      idx.resize(n);
      const float norm = p.mse->encode(sub.data(), idx.data());
      p.mse->decode(idx.data(), norm, rec.data());
    }
    for (size_t i = 0; i < n; ++i) out[p.channels[i]] = rec[i];
  }
}

std::vector<int> top_rms_channels(const float* x, size_t rows, int dim, int n) {
  std::vector<double> e(static_cast<size_t>(dim), 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (int c = 0; c < dim; ++c) e[c] += double(x[r * dim + c]) * x[r * dim + c];
  std::vector<int> order(static_cast<size_t>(dim));
  std::iota(order.begin(), order.end(), 0);
  n = std::clamp(n, 0, dim);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int a, int b) { return e[a] > e[b] || (e[a] == e[b] && a < b); });
  order.resize(static_cast<size_t>(n));
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace kvscope::formats
