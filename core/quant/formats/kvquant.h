#pragma once
// KVQuant (Hooper et al., arXiv 2401.18079) for one layer x kind, head by head, token by token
// (every per-token decision uses only that token and calibration, so it streams):
//   - keys per channel BEFORE RoPE: per KV head and channel a range [lo, hi] from calibration
//     (the f/2 and 1 - f/2 quantiles of the channel's calibration values, f = outlier_fraction;
//     min and max when f = 0), normalized u = 2 (x - lo)/(hi - lo) - 1; RoPE is re-applied to the
//     dequantized pre-RoPE keys by the caller (core/tensor/rope.h);
//   - values per token: the token's outliers removed (below), [lo, hi] = the remaining min and max,
//     stored as two fp16 per token;
//   - non-uniform datatype: 2^bits levels in the normalized space per layer x kind, learned by
//     1-D k-means (Lloyd) on the normalized calibration values (plain, unweighted: the paper's
//     Fisher-information weighting needs gradients, which a KV dump does not have);
//   - Q-Norm: the decode levels are shifted and scaled so the quantized calibration values have the
//     mean and standard deviation of the unquantized ones (the encoder keeps the k-means cells);
//   - dense-and-sparse: keys - values outside the channel's [lo, hi]; values - the round(f * d)
//     largest magnitudes of the token; kept as fp16 with their channel, in a per-token sparse row;
//   - the first `fp16_tokens` tokens (attention sink) kept fp16 and left out of calibration.
// Bits, all counted: dense codes `bits` each; per sparse entry 16 (fp16) + ceil(log2 d) (channel);
// per token a count of ceil(log2(d + 1)) bits when f > 0; values: 32 per token (lo, hi fp16);
// keys: 32 per channel per head (static); codebook 16 * 2^bits per layer x kind (static);
// fp16 tokens 16 per element.
#include <cstdint>
#include <vector>

namespace kvscope::formats {

struct KvQuantOptions {
  int bits = 4;                   // 1..8
  double outlier_fraction = 0.0;  // dense-and-sparse fraction, 0 = dense only (paper: 0.01)
  int fp16_tokens = 1;            // first tokens kept fp16 (attention sink)
  bool q_norm = true;
};

struct KvQuantCalibration {
  bool keys = false;                    // per-channel (keys) or per-token (values)
  int heads = 0, head_dim = 0;
  std::vector<float> lo, hi;            // keys: [heads, head_dim] ranges (fp16 values); values: empty
  std::vector<float> enc, dec;          // 2^bits levels: encoder cells (k-means) and decode levels (Q-Norm)
};

// calib: [heads, tokens, head_dim] (pre-RoPE keys or values) of one layer; Error on bad options or
// fewer calibration tokens than fp16_tokens + 1.
KvQuantCalibration kvquant_calibrate(const float* calib, int heads, int tokens, int head_dim, bool keys,
                                     const KvQuantOptions& opt);

struct KvQuantHeadStats {
  uint64_t bits = 0;       // everything stored for this head's tokens (not the static bits)
  uint64_t outliers = 0;   // sparse entries
};

// Quantizes and reconstructs one head's [tokens, head_dim] matrix (keys: pre-RoPE in, pre-RoPE out).
KvQuantHeadStats kvquant_roundtrip(const KvQuantCalibration& cal, int head, const float* x, int tokens,
                                   const KvQuantOptions& opt, float* out);

// Per layer x kind bits that do not grow with tokens: the codebook, and for keys the channel ranges.
uint64_t kvquant_static_bits(const KvQuantCalibration& cal);

}  // namespace kvscope::formats
