#pragma once
// TurboQuant (Zandieh et al., arXiv 2504.19874) and QJL (Zandieh et al., arXiv 2406.03482) for KV
// head vectors, one vector (token) at a time, so both stream.
//
// TurboQuantMse (the paper's Algorithm 1): y = Pi x / ||x|| with Pi a seeded Haar-random orthogonal
// matrix (Gaussian matrix, modified Gram-Schmidt in double); each coordinate of y, distributed as one
// coordinate of a random unit vector (Beta-like, ~N(0, 1/d)), is replaced by the index of its nearest
// centroid in the b-bit Lloyd-Max codebook of that density (core/quant/formats/lloyd.h); ||x|| is
// stored as fp16. Decode: x~ = ||x||_f16 * Pi^T c[idx]. Bits per vector: d*b + 16.
//
// Qjl (1-bit quantized Johnson-Lindenstrauss): S an m x d matrix of i.i.d. N(0,1) from a seed; store
// sign(S x) (m bits) and ||x|| (fp16). For any q, sqrt(pi/2)/m * ||x|| * <S q, sign(S x)> is an
// unbiased estimate of <q, x> (over the draw of S); decode returns the vector
// x~ = sqrt(pi/2)/m * ||x|| * S^T sign(S x), whose inner product with q is exactly that estimate.
// Bits per vector: m + 16.
//
// TurboQuantProd (Algorithm 2): TurboQuantMse at b-1 bits, then Qjl with m = d on the residual
// r = x - x~_mse (norm ||r|| stored fp16): <q, x~_mse + r~> is unbiased. Bits per vector: d*b + 32.
//
// Fractional bit rates (the paper's 2.5 and 3.5 bits): the channels are split into an outlier set
// (chosen per KV head, e.g. the largest RMS channels in calibration) and the rest, and two
// independent instances quantize the two sub-vectors, the outliers at more bits (TurboQuantSplit).
#include <cstdint>
#include <memory>
#include <vector>

namespace kvscope::formats {

// Haar-random d x d orthogonal matrix from a seed, row-major.
std::vector<float> random_orthogonal(int d, uint64_t seed);

class TurboQuantMse {
 public:
  TurboQuantMse(int dim, int bits, uint64_t seed);
  int dim() const { return dim_; }
  int bits() const { return bits_; }
  uint64_t bits_per_vector() const { return uint64_t(dim_) * bits_ + 16; }
  // idx: dim codes (< 2^bits); returns the stored norm (already rounded to fp16).
  float encode(const float* x, uint8_t* idx) const;
  void decode(const uint8_t* idx, float norm, float* out) const;
  const std::vector<float>& codebook() const { return *codebook_; }

 private:
  int dim_, bits_;
  std::vector<float> rot_;  // Pi, row-major
  const std::vector<float>* codebook_;
};

class Qjl {
 public:
  Qjl(int dim, int sketch_dim, uint64_t seed);
  int dim() const { return dim_; }
  int sketch_dim() const { return m_; }
  uint64_t bits_per_vector() const { return uint64_t(m_) + 16; }
  // signs: m values, 1 for S x >= 0 else 0; returns the stored norm (fp16-rounded).
  float encode(const float* x, uint8_t* signs) const;
  void decode(const uint8_t* signs, float norm, float* out) const;
  // The estimator itself, without forming x~: sqrt(pi/2)/m * norm * <S q, sign>.
  double estimate_dot(const float* q, const uint8_t* signs, float norm) const;

 private:
  int dim_, m_;
  std::vector<float> s_;  // S, m x dim row-major
};

// One vector's codes for TurboQuantProd / TurboQuantSplit.
struct TurboCode {
  std::vector<uint8_t> idx;    // MSE-stage codes (dim)
  std::vector<uint8_t> signs;  // QJL signs of the residual (dim), empty without QJL
  float norm = 0, residual_norm = 0;
};

class TurboQuantProd {
 public:
  // total_bits >= 2: MSE at total_bits - 1, QJL with m = dim on the residual.
  TurboQuantProd(int dim, int total_bits, uint64_t seed);
  uint64_t bits_per_vector() const { return mse_.bits_per_vector() + qjl_.bits_per_vector(); }
  void encode(const float* x, TurboCode* code) const;
  void decode(const TurboCode& code, float* out) const;

 private:
  TurboQuantMse mse_;
  Qjl qjl_;
};

// Two independent TurboQuant instances over a channel split; qjl_residual selects the Prod variant
// for both (keys), else Mse. outlier_channels lists channel indices (may be empty: one instance).
class TurboQuantSplit {
 public:
  TurboQuantSplit(int dim, std::vector<int> outlier_channels, int outlier_bits, int base_bits, bool qjl_residual,
                  uint64_t seed);
  int dim() const { return dim_; }
  // Per vector: codes of both instances and their norms. Static (per head): the channel set, dim bits.
  uint64_t bits_per_vector() const;
  uint64_t static_bits() const { return outlier_.empty() ? 0 : uint64_t(dim_); }
  // Quantize and reconstruct one vector (x and out may alias).
  void roundtrip(const float* x, float* out) const;

 private:
  struct Part {
    std::vector<int> channels;
    std::unique_ptr<TurboQuantMse> mse;
    std::unique_ptr<TurboQuantProd> prod;
  };
  int dim_;
  std::vector<int> outlier_;
  Part parts_[2];
};

// The n channels of largest RMS over rows x dim row-major data (ascending channel order).
std::vector<int> top_rms_channels(const float* x, size_t rows, int dim, int n);

}  // namespace kvscope::formats
