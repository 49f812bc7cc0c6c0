#pragma once
// One-dimensional Lloyd-Max quantizer design (k-means in 1-D) on weighted points, and the two
// codebooks built from it:
//   - the Lloyd-Max codebook of one coordinate of a uniformly random unit vector in R^d (TurboQuant):
//     density f_d(t) ~ (1 - t^2)^((d-3)/2) on [-1, 1] (-> N(0, 1/d) for large d), integrated on a
//     fine grid of cell midpoints (the grid's points weighted by the density);
//   - a k-means codebook of calibration samples (KVQuant's non-uniform datatype).
// Lloyd iterations: cells are bounded by the midpoints of neighbouring centroids, each centroid
// moves to its cell's weighted mean; start from the weighted quantiles (i + 1/2)/k; stop when no
// centroid moves by more than 1e-10 of the points' range or after 300 iterations. An empty cell keeps
// its centroid. The result is sorted ascending.
#include <cstddef>
#include <vector>

namespace kvscope::formats {

// points ascending; weights >= 0 (same size); k >= 1.
std::vector<double> lloyd_1d(const std::vector<double>& points, const std::vector<double>& weights, int k);

// 2^bits centroids of the coordinate density of a random unit vector in R^dim (dim >= 2, bits 1..8).
// Cached: the first call per (dim, bits) computes it.
const std::vector<float>& sphere_coordinate_codebook(int dim, int bits);

// 2^bits centroids of the samples (unweighted k-means); fewer distinct samples than centroids give
// repeated centroids. samples is taken by value (sorted inside).
std::vector<float> kmeans_codebook(std::vector<float> samples, int bits);

// Index of the centroid nearest to v in an ascending codebook (ties to the lower index).
int nearest_centroid(const float* codebook, int k, float v);

// Expected squared error of a codebook under the sphere-coordinate density of dim (for tests/docs).
double sphere_coordinate_mse(int dim, const std::vector<float>& codebook);

}  // namespace kvscope::formats
