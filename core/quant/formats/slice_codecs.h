#pragma once
// Round trips of one KV head's [tokens, head_dim] matrix through each format, with exact bits:
// the per-slice building blocks a method registry entry wraps (quantize, dequantize, count).
// Every function writes the reconstruction to `out` (may not alias x) and returns the bits stored.
#include <cstddef>
#include <cstdint>

#include "core/quant/formats/fp8.h"
#include "core/quant/formats/ggml_blocks.h"
#include "core/quant/formats/turboquant.h"

namespace kvscope::formats {

struct SliceBits {
  uint64_t bits = 0;         // everything stored for the slice, static_bits included
  uint64_t static_bits = 0;  // the part that does not grow with tokens
};

// llama.cpp block type, one cache row per token (head_dim a multiple of 32, else Error).
SliceBits ggml_slice(GgmlType t, const float* x, int tokens, int head_dim, float* out);
// FP8 with one fp32 scale for the slice (counted as static bits when count_scale; a per-layer x kind
// scale shared by the heads is counted once by the caller instead).
SliceBits fp8_slice(Fp8Format f, const float* x, int tokens, int head_dim, float scale, bool count_scale, float* out);
// NVFP4 along head_dim per token (head_dim a multiple of 16), fp32 tensor scale counted as static.
SliceBits nvfp4_slice(const float* x, int tokens, int head_dim, float global_scale, float* out);
// TurboQuant (split over outlier channels or not), vector by vector; static bits = channel mask.
SliceBits turboquant_slice(const TurboQuantSplit& tq, const float* x, int tokens, float* out);

}  // namespace kvscope::formats
