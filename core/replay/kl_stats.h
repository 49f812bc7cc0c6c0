#pragma once
// Next-token statistics of a quantized model against its reference, as llama.cpp's
// `llama-perplexity --kl-divergence` defines them (tools/perplexity/perplexity.cpp), per workload slice.
//
// Per scored step s with reference distribution P_s, quantized Q_s and fed token y_s:
//   kld_s   = KL(P_s || Q_s) = sum_v P_s(v) (log P_s(v) - log Q_s(v))   (nats, log-softmax in double)
//   dp_s    = Q_s(y_s) - P_s(y_s)                                         (Δp, change in the correct token's probability)
//   nll_s   = -log Q_s(y_s),  nll_base_s = -log P_s(y_s)
//   same_s  = argmax Q_s == argmax P_s (first maximum)
// Over the N steps (llama.cpp's mean_and_uncertainty / covariance):
//   mean ± err of x: m = sum x / N, err = sqrt((sum x^2 / N - m^2) / (N - 1)) when that is > 0 and N > 10, else 0
//   cov(a, b)      = (sum ab / N - (sum a / N)(sum b / N)) / (N - 1) when N >= 10, else 0
//   PPL(Q) = exp(mean nll) ± PPL(Q)·err(nll); PPL(base) likewise
//   ln(PPL(Q)/PPL(base)) = mean nll - mean nll_base ± sqrt(err² + err_base² - 2 cov)
//   PPL(Q)/PPL(base) = exp(ln ratio) ± ratio·err(ln ratio)
//   PPL(Q) - PPL(base) ± sqrt(ppl_err² + ppl_base_err² - 2 PPL(Q) PPL(base) cov)
//   Cor(ln PPL(Q), ln PPL(base)) = cov / (err · err_base)
//   RMS Δp = sqrt(mean dp²) ± 0.5 / RMS · err(dp²);  same top p = n_same / N ± sqrt(p (1 - p) / (N - 1))
//   percentiles of the sorted values: linear interpolation at fraction·(N - 1); median = mean of the middle two.
// Differences from llama.cpp, on purpose: llama.cpp reads P_s back from 16-bit log-probs and skips
// tokens with log P_s(v) <= -16; here P_s is exact (f32 logits, double arithmetic), so an fp16 cache
// gives exactly 0. Differences under a square root that round below 0 are taken as 0; a correlation
// with a zero uncertainty (fewer than 11 steps, or constant values) is reported as 0.
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace kvscope {

// log-softmax of logits, in double.
std::vector<double> log_softmax(std::span<const float> logits);
// KL(P || Q) in nats from log-probabilities (terms with P(v) = 0 contribute 0); clamped at 0.
double kl_divergence(std::span<const double> lp_ref, std::span<const double> lp_q);
int32_t argmax(std::span<const float> x);  // first maximum, as numpy argmax

// One scored step.
struct StepStat {
  double kld = 0;
  double nll = 0, nll_base = 0;  // -log Q(y), -log P(y)
  double dp = 0;                 // Q(y) - P(y)
  bool same_top = false;
};

// The statistics of one step from the two logit vectors and the fed token.
StepStat step_stat(std::span<const float> ref_logits, std::span<const float> q_logits, int32_t token);

struct KlStats {
  int count = 0;
  double ppl = 0, ppl_err = 0, ppl_base = 0, ppl_base_err = 0;
  double ln_ppl_cor = 0;  // Cor(ln PPL(Q), ln PPL(base)), a fraction
  double ln_ppl_ratio = 0, ln_ppl_ratio_err = 0;
  double ppl_ratio = 0, ppl_ratio_err = 0;
  double ppl_diff = 0, ppl_diff_err = 0;
  double kld_mean = 0, kld_err = 0;
  // max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1, min
  static constexpr int kKldLevels = 11;
  double kld_pct[kKldLevels] = {};
  double dp_mean = 0, dp_err = 0;  // fractions (llama.cpp prints them x100 as %)
  // max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1, min
  static constexpr int kDpLevels = 13;
  double dp_pct[kDpLevels] = {};
  double dp_rms = 0, dp_rms_err = 0;
  double same_top = 0, same_top_err = 0;
};

// The percentile levels (fractions; 1 = max, 0.5 = median, 0 = min) and their field-name suffixes.
extern const double kKldLevelFractions[KlStats::kKldLevels];
extern const char* const kKldLevelNames[KlStats::kKldLevels];  // "max", "p99_9", ..., "median", ..., "min"
extern const double kDpLevelFractions[KlStats::kDpLevels];
extern const char* const kDpLevelNames[KlStats::kDpLevels];

// Percentile of sorted values by llama.cpp's rule (0 for an empty list).
double sorted_percentile(const std::vector<double>& sorted, double fraction);

KlStats kl_statistics(const std::vector<StepStat>& steps);

// The new TEST_METRICS fields, in order ("next_token_kl_err", "kld_max", ...; docs/REPLAY.md).
std::vector<std::pair<std::string, double>> kl_stat_fields(const KlStats& s);
// Rebuilds the statistics from stored (name, value) fields (runs show); missing ones stay 0. Returns
// false when the fields hold no statistics (a run stored before they existed).
bool kl_stats_from_fields(const std::vector<std::pair<std::string, double>>& fields, KlStats& out);

// The three blocks llama.cpp prints (====== Perplexity statistics ====== ...), same labels and layout.
std::string kl_stats_block(const KlStats& s);

}  // namespace kvscope
