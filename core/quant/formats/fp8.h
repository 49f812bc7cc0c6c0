#pragma once
// FP8 KV cache as vLLM stores it: OCP 8-bit floats with an fp32 scale.
//   e4m3 (E4M3FN): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; NaN = S.1111.111;
//                  largest finite 448 (S.1111.110), smallest subnormal 2^-9.
//   e5m2:          1 sign, 5 exponent (bias 15), 2 mantissa bits; IEEE-like: S.11111.00 = inf,
//                  S.11111.{01,10,11} = NaN; largest finite 57344, smallest subnormal 2^-16.
// Encoding rounds to nearest, ties to even, and saturates: finite values beyond the largest finite
// value and +-inf become +-max finite (vLLM clamps to the fp8 range before converting); NaN stays
// NaN (encoded S.1111.111 for e4m3, S.11111.11 for e5m2). A tensor is stored as
// code = encode(x / scale), read back as decode(code) * scale.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvscope::formats {

enum class Fp8Format { E4M3, E5M2 };

struct Fp8Info {
  std::string_view name;  // "e4m3", "e5m2"
  int exp_bits, man_bits, bias;
  float max_finite;       // 448, 57344
};
const Fp8Info& fp8_info(Fp8Format f);
bool parse_fp8_format(std::string_view name, Fp8Format* out);

uint8_t fp8_encode(Fp8Format f, float x);
float fp8_decode(Fp8Format f, uint8_t code);

// code[i] = encode(x[i] / scale); y[i] = decode(code[i]) * scale. scale > 0.
void fp8_quantize(Fp8Format f, const float* x, size_t n, float scale, uint8_t* codes);
void fp8_dequantize(Fp8Format f, const uint8_t* codes, size_t n, float scale, float* y);

// Where a scale comes from (vLLM's choices): a fixed 1.0 (no calibration; values beyond the format's
// range saturate), or amax / max_finite from calibration data, one per layer x kind ("tensor") or
// one per KV head.
enum class Fp8ScaleMode { Fixed, PerTensor, PerHead };
// amax / max_finite; 1.0 when amax is 0 or not finite (nothing to scale).
float fp8_scale_from_amax(Fp8Format f, float amax);
// Largest |x| over n values (NaN ignored).
float abs_max(const float* x, size_t n);

}  // namespace kvscope::formats
