#pragma once
// Calibration for replay (seed 002's calibration_mode hook): the K, V and queries the data-dependent
// decisions of a policy are measured on, either once on a calibration text before the replay
// ("text") or on each item's prompt during its prefill ("online"). What is decided from it:
//   - ranked outlier heads (mse_over_median, mse_share, count): strat1 K MSE of each (layer, KV head);
//   - KVSmooth ($.smooth): per-channel max |K| -> smoothing scales, folded into the cache's K codes;
//   - attention-guided bits ($.attention): QAQ's error bounds per (layer, kind, head group).
// docs/REPLAY.md gives the precise rules.
#include <span>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/policy/policy.h"
#include "core/tokenizer/tokenizer.h"

namespace kvscope {

struct Calibration {
  int tokens = 0;  // T calibration positions (0 .. T-1)
  int layers = 0, kv_heads = 0, q_heads = 0, head_dim = 0;
  std::vector<std::vector<float>> k, v;  // per layer [kv_heads, T, D], post-RoPE, rounded to fp16
  std::vector<std::vector<float>> q;     // per layer [q_heads, T, D], post-RoPE queries
  double seconds = 0;                    // time spent collecting (and, for text, the forward pass)
};

// Collects the first `max_tokens` positions of one forward's activations (capture hook).
class CalibrationCollector {
 public:
  CalibrationCollector(const ModelConfig& cfg, int max_tokens);
  const CaptureHook& hook() const { return hook_; }
  Calibration finish();  // Error when nothing was captured

 private:
  Calibration c_;
  int max_tokens_;
  double seconds_ = 0;
  CaptureHook hook_;
};

// Mode text: the first spec.tokens tokens of spec.text (BOS + text) through the model.
Calibration calibrate_on_text(const Model& model, const Tokenizer& tok, const CalibrationSpec& spec,
                              const std::string& where);

// strat1 K MSE (symmetric int8, one scale per head, as for dumps) per layer * kv_heads + head.
std::vector<double> calibration_strat1_k_mse(const Calibration& c);

// Smoothing scales per layer ([kv_heads * head_dim], empty = layer not smoothed) from the
// calibration's max |K| (rotate-half pairs).
std::vector<std::vector<float>> calibration_smooth_scales(const Calibration& c, const SmoothOptions& s,
                                                          const std::string& where);

// Attention-guided bits (QAQ bounds) for one (layer, kind, head group):
struct GroupBitChoice {
  double range = 0;      // r: largest quantization-group range of the group's heads (2 max|x| if symmetric)
  double tolerance = 0;  // e: tolerated error (QAQ): K sqrt(12 / q_norm * ln(T^3 / (T-1) * sigma^2 + 1)),
                         //    V sqrt(12 / T) * sigma / a
  double attention = 0;  // a: V only, largest attention probability of the last n query rows
  double q_norm = 0;     // K only: the q_norm used
  int bits = 0;          // clamp(ceil(log2(r / (2 e) + 1)), bit_range), before the budget
};
// x: [heads_in_group][T * D] rows of the group (after smoothing for K); quant: the settings of each head.
double quant_group_range(const float* x, int T, int D, const TensorQuant& q);
// Largest softmax probability any key gets from the last n query rows of the query heads [q_lo, q_hi).
double max_recent_attention(const Calibration& c, int layer, int q_lo, int q_hi, int last_n);
// Largest |q|^2 / head_dim over the last n query rows of query heads [q_lo, q_hi).
double measured_q_norm(const Calibration& c, int layer, int q_lo, int q_hi, int last_n);
int qaq_bits(double range, double tolerance, int min_bits, int max_bits);
double qaq_key_tolerance(double q_norm, int T, double sigma);
double qaq_value_tolerance(double attention, int T, double sigma);

}  // namespace kvscope
