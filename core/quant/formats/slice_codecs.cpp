// Per-head slice round trips; see slice_codecs.h.
#include "core/quant/formats/slice_codecs.h"

#include <vector>

#include "core/quant/formats/nvfp4.h"
#include "core/util/error.h"

namespace kvscope::formats {

SliceBits ggml_slice(GgmlType t, const float* x, int tokens, int head_dim, float* out) {
  if (head_dim % kGgmlBlock != 0)
    fail(std::string(ggml_type_info(t).name), "head_dim {} is not a multiple of the block size {}", head_dim, kGgmlBlock);
  const size_t row = ggml_row_bytes(t, static_cast<size_t>(head_dim));
  std::vector<uint8_t> bytes(row);
  for (int r = 0; r < tokens; ++r) {
    const size_t off = static_cast<size_t>(r) * head_dim;
    ggml_quantize_row(t, x + off, static_cast<size_t>(head_dim), bytes.data());
    ggml_dequantize_row(t, bytes.data(), static_cast<size_t>(head_dim), out + off);
  }
  return {uint64_t(row) * 8 * static_cast<uint64_t>(tokens), 0};
}

SliceBits fp8_slice(Fp8Format f, const float* x, int tokens, int head_dim, float scale, bool count_scale, float* out) {
  const size_t n = static_cast<size_t>(tokens) * head_dim;
  std::vector<uint8_t> codes(n);
  fp8_quantize(f, x, n, scale, codes.data());
  fp8_dequantize(f, codes.data(), n, scale, out);
  const uint64_t s = count_scale ? 32 : 0;
  return {uint64_t(n) * 8 + s, s};
}

SliceBits nvfp4_slice(const float* x, int tokens, int head_dim, float global_scale, float* out) {
  if (head_dim % kNvfp4Block != 0) fail("nvfp4", "head_dim {} is not a multiple of the block size {}", head_dim, kNvfp4Block);
  std::vector<uint8_t> codes(static_cast<size_t>(head_dim) / 2), scales(static_cast<size_t>(head_dim) / kNvfp4Block);
  for (int r = 0; r < tokens; ++r) {
    const size_t off = static_cast<size_t>(r) * head_dim;
    nvfp4_quantize(x + off, static_cast<size_t>(head_dim), global_scale, codes.data(), scales.data());
    nvfp4_dequantize(codes.data(), scales.data(), static_cast<size_t>(head_dim), global_scale, out + off);
  }
  const uint64_t per_row = uint64_t(head_dim) * 4 + uint64_t(head_dim / kNvfp4Block) * 8;
  return {per_row * static_cast<uint64_t>(tokens) + 32, 32};
}

SliceBits turboquant_slice(const TurboQuantSplit& tq, const float* x, int tokens, float* out) {
  const int d = tq.dim();
  for (int r = 0; r < tokens; ++r) tq.roundtrip(x + static_cast<size_t>(r) * d, out + static_cast<size_t>(r) * d);
  return {tq.bits_per_vector() * static_cast<uint64_t>(tokens) + tq.static_bits(), tq.static_bits()};
}

}  // namespace kvscope::formats
