#pragma once
// NVFP4 as NVIDIA ModelOpt / TensorRT-LLM store it (weights and KV cache):
//   - 16-element blocks of FP4 e2m1 values {0, 0.5, 1, 1.5, 2, 3, 4, 6} and their negatives
//     (1 sign, 2 exponent bits with bias 1, 1 mantissa bit; code = sign << 3 | magnitude index);
//   - one FP8 e4m3 scale per block: s_b = e4m3(amax_b / 6 / g), an all-zero block gets s_b = 1.0;
//   - one fp32 scale per tensor: g = amax / (6 * 448) (the calibration amax of the tensor).
// x ~= e2m1 * decode(s_b) * g; x / (decode(s_b) * g) is rounded to the nearest e2m1 value, ties to the
// even code (ModelOpt's _cast_fp4 bounds 0.25, 0.75, ..., 5: odd bounds round up, even ones down),
// saturating at 6. Storage: 4 bits per element + 8 bits per block of 16 = 4.5 bits per element,
// plus 32 bits per tensor.
#include <cstddef>
#include <cstdint>

namespace kvscope::formats {

inline constexpr int kNvfp4Block = 16;

// |value| of each 3-bit magnitude code.
extern const float kE2m1Values[8];
uint8_t e2m1_encode(float x);  // 4-bit code, RNE, saturating at +-6; NaN -> 0
float e2m1_decode(uint8_t code);

// Per-tensor scale from an amax: amax / (6 * 448); 1.0 when amax is 0 or not finite.
float nvfp4_global_scale(float amax);

// x: n floats (n a multiple of 16). codes: n/2 bytes, element 2i in the low nibble of byte i, 2i+1 in
// the high one; block_scales: n/16 e4m3 codes.
void nvfp4_quantize(const float* x, size_t n, float global_scale, uint8_t* codes, uint8_t* block_scales);
void nvfp4_dequantize(const uint8_t* codes, const uint8_t* block_scales, size_t n, float global_scale, float* y);

}  // namespace kvscope::formats
