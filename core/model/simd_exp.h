#pragma once
// Vectorized exp for the model's kernels (AVX2+FMA; callers check the CPU first).
#include <immintrin.h>

namespace kvscope {

// Cephes expf on 8 lanes: exp(x) = 2^k exp(r), r in [-ln2/2, ln2/2], degree-5 polynomial
// (rel. error < 2e-7). Inputs below -87.3 (and -inf) give 0.
__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 v) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f);
  const __m256 c1 = _mm256_set1_ps(0.693359375f), c2 = _mm256_set1_ps(-2.12194440e-4f);
  const __m256 underflow = _mm256_cmp_ps(v, lo, _CMP_LT_OQ);
  v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(v, log2e, half));
  v = _mm256_fnmadd_ps(fx, c1, v);
  v = _mm256_fnmadd_ps(fx, c2, v);
  const __m256 z = _mm256_mul_ps(v, v);
  __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500E-4f), v, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, _mm256_add_ps(v, one));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));  // exp(-inf), tiny: 0
}

}  // namespace kvscope
