// Randomized Walsh-Hadamard rotation; see hadamard.h.
#include "core/quant/formats/hadamard.h"

#include <cmath>

#include "core/util/error.h"

namespace kvscope::formats {

namespace {
uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

void fwht(float* x, int n) {
  for (int h = 1; h < n; h *= 2)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

std::vector<float> random_signs(int n, uint64_t seed) {
  std::vector<float> s(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) s[i] = (splitmix64(seed + static_cast<uint64_t>(i)) & 1u) ? -1.0f : 1.0f;
  return s;
}

HadamardRotation::HadamardRotation(int dim, uint64_t seed, bool use_signs) : dim_(dim) {
  if (dim <= 0 || dim % 2 != 0)
    fail("rotation", "head_dim {} has no power-of-two Hadamard block (it must be even)", dim);
  block_ = dim & -dim;  // largest power of two dividing dim
  norm_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(block_)));
  signs_ = use_signs ? random_signs(dim, seed) : std::vector<float>(static_cast<size_t>(dim), 1.0f);
}

void HadamardRotation::rotate(float* x, size_t rows) const {
  for (size_t r = 0; r < rows; ++r, x += dim_) {
    for (int i = 0; i < dim_; ++i) x[i] *= signs_[i];
    for (int b = 0; b < dim_; b += block_) fwht(x + b, block_);
    for (int i = 0; i < dim_; ++i) x[i] *= norm_;
  }
}

void HadamardRotation::unrotate(float* x, size_t rows) const {
  for (size_t r = 0; r < rows; ++r, x += dim_) {
    for (int b = 0; b < dim_; b += block_) fwht(x + b, block_);
    for (int i = 0; i < dim_; ++i) x[i] *= norm_ * signs_[i];
  }
}

}  // namespace kvscope::formats
