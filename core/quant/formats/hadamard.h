#pragma once
// Randomized Walsh-Hadamard rotation of head vectors: R = (1/sqrt(b)) H_b D, block-diagonal over
// head_dim / b blocks of b = the largest power of two dividing head_dim (b = head_dim when it is a
// power of two; 96 -> 3 blocks of 32; 80 -> 5 of 16), D = diag(+-1) drawn from a seed. Nothing is
// stored (the signs are regenerated from the seed), so the rotation costs no bits. R is orthonormal:
// R^-1 = R^T = D H_b / sqrt(b), so q.k = (Rq).(Rk) and attention output o = R^T (sum p_j R v_j).
// An odd head_dim (no power-of-two block >= 2) is an error. llama.cpp (PR 21038) rotates with an
// unsigned H (D = I) and only when head_dim is a multiple of 64; `random_signs = false` gives that.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvscope::formats {

// In-place unnormalized fast Walsh-Hadamard transform of n = 2^k values (Sylvester ordering).
void fwht(float* x, int n);

class HadamardRotation {
 public:
  // Throws Error when dim is not a positive even number.
  HadamardRotation(int dim, uint64_t seed, bool random_signs = true);
  int dim() const { return dim_; }
  int block() const { return block_; }
  // x: rows vectors of dim floats each, row-major, in place.
  void rotate(float* x, size_t rows = 1) const;
  void unrotate(float* x, size_t rows = 1) const;
  const std::vector<float>& signs() const { return signs_; }

 private:
  int dim_, block_;
  float norm_;                // 1 / sqrt(block)
  std::vector<float> signs_;  // the diagonal of D
};

// The seeded sign sequence: sign i is bit 0 of splitmix64 applied to seed + i (+1 for 0, -1 for 1).
std::vector<float> random_signs(int n, uint64_t seed);

}  // namespace kvscope::formats
