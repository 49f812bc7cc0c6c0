#pragma once
// Streaming kernels for the plain per-group quantizers (uniform int-N on the token / channel /
// head axis, KIVI = keys per-channel + values per-token, kvmix's inverse-scale variant): the
// matrix is read once at its stored precision (F16, BF16, F32), converted tile by tile inside the
// kernel, and one pass gives packed codes, scales / zero points, the error sums against the
// reconstruction and, when asked, the reconstruction itself.
//
// This is the one group kernel: quantize_tensor() is quantize_stored() on an F32 matrix. Results
// are bit-identical to quantize_tensor_reference on the same values converted to f32 (codes,
// scales, zeros, fp16 rows; tested exhaustively), and the error sums equal ErrorSums::add over
// the whole matrix (same 256-element blocks). The loops are branch-free so they vectorize: group
// ranges, then the parameters of a tile's groups in one loop (f16/bf16 rounding of scales
// included), then codes + reconstruction. Whole-axis groups with clip search hold the converted
// region (every element is needed per candidate ratio).
#include <vector>

#include "core/metrics/tensor_error.h"
#include "core/policy/policy.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/stored_matrix.h"

namespace kvscope {

// Quantizes x [rows, cols]; `err` (may be null) receives the error sums of x vs its
// reconstruction; `recon` (may be null) receives the reconstruction, rows * cols floats.
// `orig` (may be null) receives x in f32, rows * cols floats: the conversion the kernel does
// anyway, for a caller that needs the originals too (attention metrics) without a second pass.
QuantizedTensor quantize_stored(const StoredMatrix& x, const TensorQuant& spec, int fp_head = 0, int fp_tail = 0,
                                ErrorSums* err = nullptr, float* recon = nullptr, float* orig = nullptr);

// One matrix of a batch (typically one (layer, KV head, kind) slice of a dump).
struct StoredJob {
  StoredMatrix x;
  TensorQuant spec;
  int fp_head = 0, fp_tail = 0;
  float* recon = nullptr;  // optional
  float* orig = nullptr;   // optional: x in f32
};

struct StoredResult {
  QuantizedTensor q;
  ErrorSums err;
};

// The instruction set of the kernels' loops: the best the CPU has (Auto), or one forced for a test or a
// benchmark A/B. Every choice gives the same bits. set_group_kernel_isa returns false (and changes
// nothing) when the CPU lacks the instructions.
enum class KernelIsa { Auto, Avx512, Avx2, Baseline };
bool set_group_kernel_isa(KernelIsa isa);
const char* group_kernel_isa_name();  // the one in use: "avx512", "avx2" or "baseline"

// All jobs, spread over worker_threads() (parallel_for); results in job order.
std::vector<StoredResult> quantize_stored_all(const std::vector<StoredJob>& jobs);

}  // namespace kvscope
