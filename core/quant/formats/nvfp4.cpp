// NVFP4 blocks; see nvfp4.h.
#include "core/quant/formats/nvfp4.h"

#include <cmath>

#include "core/quant/formats/fp8.h"
#include "core/util/error.h"

namespace kvscope::formats {

const float kE2m1Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

uint8_t e2m1_encode(float x) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const float a = std::fabs(x);
  // Midpoints between neighbouring magnitudes; at a tie the even code (index) wins.
  static const float kMid[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  int i = 0;
  while (i < 7 && a > kMid[i]) ++i;
  if (i < 7 && a == kMid[i] && (i & 1)) ++i;  // a tie at an odd bound rounds up to the even code
  return sign | static_cast<uint8_t>(i);
}

float e2m1_decode(uint8_t code) {
  const float v = kE2m1Values[code & 0x7];
  return (code & 0x8) ? -v : v;
}

float nvfp4_global_scale(float amax) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;
  return amax / (6.0f * 448.0f);
}

void nvfp4_quantize(const float* x, size_t n, float global_scale, uint8_t* codes, uint8_t* block_scales) {
  if (n % kNvfp4Block != 0) fail("nvfp4", "row length {} is not a multiple of {}", n, kNvfp4Block);
  for (size_t b = 0; b < n / kNvfp4Block; ++b) {
    const float* xb = x + b * kNvfp4Block;
    float amax = 0.0f;
    for (int j = 0; j < kNvfp4Block; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    float s = amax / (6.0f * global_scale);
    if (s == 0.0f) s = 1.0f;  // ModelOpt: an all-zero block's scale is 1
    const uint8_t sc = fp8_encode(Fp8Format::E4M3, s);
    block_scales[b] = sc;
    const float d = fp8_decode(Fp8Format::E4M3, sc) * global_scale;
    for (int j = 0; j < kNvfp4Block; j += 2) {
      // A block scale that underflowed e4m3 to 0 leaves the block at 0 rather than dividing by 0.
      const uint8_t lo = d > 0.0f ? e2m1_encode(xb[j] / d) : 0;
      const uint8_t hi = d > 0.0f ? e2m1_encode(xb[j + 1] / d) : 0;
      codes[(b * kNvfp4Block + j) / 2] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void nvfp4_dequantize(const uint8_t* codes, const uint8_t* block_scales, size_t n, float global_scale, float* y) {
  if (n % kNvfp4Block != 0) fail("nvfp4", "row length {} is not a multiple of {}", n, kNvfp4Block);
  for (size_t b = 0; b < n / kNvfp4Block; ++b) {
    const float d = fp8_decode(Fp8Format::E4M3, block_scales[b]) * global_scale;
    for (int j = 0; j < kNvfp4Block; ++j) {
      const size_t i = b * kNvfp4Block + j;
      const uint8_t c = (i & 1) ? (codes[i / 2] >> 4) : (codes[i / 2] & 0x0F);
      y[i] = e2m1_decode(c) * d;
    }
  }
}

}  // namespace kvscope::formats
