#pragma once
// Element types of safetensors files and the conversions core/ needs (all compute is f32).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvscope {

enum class DType { F32, F16, BF16, I8, U8, I32, I64 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);           // safetensors spelling: "F32", "BF16", ...
bool parse_dtype(std::string_view s, DType* out);  // false for names we do not support

// IEEE binary16 / bfloat16 <-> f32, round-to-nearest-even, NaN and Inf preserved.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
// Rounds an f32 to the nearest f16 value (what storing it as fp16 keeps).
inline float round_to_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

// Converts n elements of type `t` at `src` (unaligned allowed) to f32.
void convert_to_f32(DType t, const void* src, size_t n, float* dst);
// Converts n f32 values to type `t` (F32, F16 or BF16).
void convert_from_f32(DType t, const float* src, size_t n, void* dst);

}  // namespace kvscope
