#pragma once
// llama.cpp's KV cache block types (`-ctk/-ctv`): q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl.
// Each quantizes blocks of 32 consecutive values (along head_dim, per token, as llama.cpp stores
// a cache row) into a packed block, byte for byte as ggml lays it out in memory (little-endian,
// fp16 scales). The quantizers follow ggml's reference functions (quantize_row_<type>_ref in
// ggml-quants.c): the same float operations in the same order, C truncation where ggml casts,
// roundf for q8_0, iq4_nl's reference path (one least-squares refit, no scale search), fp16 by
// round-to-nearest-even; so the
// bytes and the dequantized floats equal ggml's (tested against shared/data/ggml_kv_types_golden.json).
//
//   type    bytes/block  layout (offsets in bytes)                                  bits/elem
//   q8_0    34           d f16 @0, int8 q[32] @2                                    8.5
//   q4_0    18           d f16 @0, nibbles @2 (q[j] low, q[j+16] high), q-8         4.5
//   q4_1    20           d f16 @0, m f16 @2, nibbles @4, q*d+m                      5.0
//   q5_0    22           d f16 @0, qh u32 @2 (bit j = 5th bit of q[j]), nibbles @6  5.5
//   q5_1    24           d f16 @0, m f16 @2, qh u32 @4, nibbles @8                  6.0
//   iq4_nl  18           d f16 @0, nibbles @2 indexing a 16-entry non-uniform table 4.5
//
// Inputs are finite floats (non-finite inputs give unspecified codes, never undefined behaviour).
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvscope::formats {

enum class GgmlType { Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL };

inline constexpr int kGgmlBlock = 32;  // elements per block, every type here

struct GgmlTypeInfo {
  std::string_view name;  // llama.cpp's spelling: "q4_0"
  int block_bytes;        // bytes per block of 32
};

const GgmlTypeInfo& ggml_type_info(GgmlType t);
// False for names that are not one of the six types.
bool parse_ggml_type(std::string_view name, GgmlType* out);
inline constexpr GgmlType kAllGgmlTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                                             GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL};

// Bytes of a row of n values (n a multiple of 32).
inline size_t ggml_row_bytes(GgmlType t, size_t n) { return n / kGgmlBlock * ggml_type_info(t).block_bytes; }
// Exact storage per element, scales included: block_bytes * 8 / 32.
inline double ggml_bits_per_element(GgmlType t) { return ggml_type_info(t).block_bytes * 8.0 / kGgmlBlock; }

// x: n floats (n a multiple of 32, else Error); out: ggml_row_bytes(t, n) bytes.
void ggml_quantize_row(GgmlType t, const float* x, size_t n, uint8_t* out);
// in: ggml_row_bytes(t, n) bytes; y: n floats.
void ggml_dequantize_row(GgmlType t, const uint8_t* in, size_t n, float* y);

// iq4_nl's table of non-uniform levels (ggml's kvalues_iq4nl), for inspection and tests.
extern const int8_t kIq4nlValues[16];

}  // namespace kvscope::formats
