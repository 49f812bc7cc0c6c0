#pragma once
// A quantized K or V head matrix [rows = tokens, cols = head_dim]: packed integer codes plus
// the metadata needed to dequantize, with an exact size in bits.
//
// Rows [0, fp_head) (sinks) and [rows - fp_tail, rows) (residual window) are kept in fp16;
// the rows between are quantized in groups (see TensorQuant in core/policy/policy.h):
//   Axis::Token   groups of group_len consecutive channels of one token (last group may be short)
//   Axis::Channel groups of group_len consecutive tokens of one channel, blocks aligned at the
//                 first quantized row (KIVI keys)
//   Axis::Head    one group for the whole quantized region (kvmix strat1)
// Codes are unsigned, `bits` wide, packed LSB-first in row-major element order of the quantized
// rows. Symmetric codes are stored offset by qmax. Scales and float zero points are stored in
// spec.scale_dtype and the codes are computed with the rounded values, so encoder and decoder agree.
// Rounding is round-half-to-even everywhere (never truncation).
#include <cstdint>
#include <vector>

#include "core/policy/policy.h"

namespace kvscope {

struct QuantizedTensor {
  int rows = 0, cols = 0;
  int fp_head = 0, fp_tail = 0;
  TensorQuant spec;
  int group_len = 0;               // resolved group length along the axis
  std::vector<uint8_t> codes;      // packed bitstream
  std::vector<float> scales;       // one per group (exact values of scale_dtype)
  std::vector<float> zeros;        // float zero point (group min) or integer zero point; empty if symmetric
  std::vector<uint16_t> fp16_rows; // kept rows as IEEE fp16 bits: fp_head rows then fp_tail rows

  int quantized_rows() const { return rows - fp_head - fp_tail; }
  uint64_t code_bits() const;
  uint64_t meta_bits() const;       // scales + zero points
  uint64_t fp_bits() const;         // kept fp16 rows
  uint64_t total_bits() const { return code_bits() + meta_bits() + fp_bits(); }
  // The part of total_bits() that does not grow with the number of tokens (per-cache constants:
  // per-head-global scales, per-channel scales over the whole sequence).
  uint64_t static_bits() const;

  void dequantize(float* out) const;  // out: rows * cols floats
  // Unpacked integer code of element (row, col) of the matrix (row must be a quantized row);
  // symmetric codes are returned signed. For tests and inspection.
  int code_at(int row, int col) const;
};

// Fast path. `x` is [rows, cols] row-major. Throws Error for invalid specs. When `recon` is given
// it receives the reconstruction computed on the way (bit-identical to dequantize(), one pass less).
QuantizedTensor quantize_tensor(const float* x, int rows, int cols, const TensorQuant& spec, int fp_head = 0,
                                int fp_tail = 0, float* recon = nullptr);
// Plain reference implementation (scalar loops, std::nearbyint, no packing tricks) producing the
// identical result; the fast path is tested against it (as ggml tests from_float vs from_float_ref).
QuantizedTensor quantize_tensor_reference(const float* x, int rows, int cols, const TensorQuant& spec,
                                          int fp_head = 0, int fp_tail = 0);

// Validates a spec; returns an empty string when valid, else the problem ("bits must be in 1..8").
std::string check_tensor_quant(const TensorQuant& spec);
int resolved_group_len(const TensorQuant& spec, int quantized_rows, int cols);

// Bit packing of unsigned codes (< 2^bits), LSB-first.
void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* out);  // out: packed_bytes(n, bits)
void unpack_codes(const uint8_t* packed, size_t first, size_t n, int bits, uint8_t* out);
inline size_t packed_bytes(size_t n, int bits) { return (n * static_cast<size_t>(bits) + 7) / 8; }

// Round half to even for |v| < 2^22 without a libm call (the FPU's default rounding mode does it);
// vectorizes. Equal to std::nearbyint on that range (tested).
inline float rint_small(float v) {
  constexpr float magic = 12582912.0f;  // 1.5 * 2^23
  return (v + magic) - magic;
}

}  // namespace kvscope
