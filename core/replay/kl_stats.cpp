#include "core/replay/kl_stats.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>

#include <fmt/format.h>

namespace kvscope {

const double kKldLevelFractions[KlStats::kKldLevels] = {1, 0.999, 0.99, 0.95, 0.9, 0.5, 0.1, 0.05, 0.01, 0.001, 0};
const char* const kKldLevelNames[KlStats::kKldLevels] = {"max", "p99_9", "p99", "p95", "p90", "median",
                                                         "p10", "p5",    "p1",  "p0_1", "min"};
const double kDpLevelFractions[KlStats::kDpLevels] = {1, 0.999, 0.99, 0.95, 0.9, 0.75, 0.5, 0.25, 0.1, 0.05, 0.01, 0.001, 0};
const char* const kDpLevelNames[KlStats::kDpLevels] = {"max", "p99_9", "p99", "p95", "p90", "p75", "median",
                                                       "p25", "p10",   "p5",  "p1",  "p0_1", "min"};

std::vector<double> log_softmax(std::span<const float> x) {
  double mx = -INFINITY;
  for (float v : x) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : x) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<double>(x[i]) - lse;
  return out;
}

double kl_divergence(std::span<const double> lp_ref, std::span<const double> lp_q) {
  double kl = 0;
  for (size_t i = 0; i < lp_ref.size(); ++i) {
    const double p = std::exp(lp_ref[i]);
    if (p > 0) kl += p * (lp_ref[i] - lp_q[i]);
  }
  return std::max(0.0, kl);
}

int32_t argmax(std::span<const float> x) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(x.size()); ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

StepStat step_stat(std::span<const float> ref_logits, std::span<const float> q_logits, int32_t token) {
  const std::vector<double> lp_ref = log_softmax(ref_logits), lp_q = log_softmax(q_logits);
  StepStat s;
  s.kld = kl_divergence(lp_ref, lp_q);
  s.nll = -lp_q[token];
  s.nll_base = -lp_ref[token];
  s.dp = std::exp(lp_q[token]) - std::exp(lp_ref[token]);
  s.same_top = argmax(ref_logits) == argmax(q_logits);
  return s;
}

double sorted_percentile(const std::vector<double>& v, double fraction) {
  if (v.empty()) return 0;
  if (fraction <= 0) return v.front();
  if (fraction >= 1) return v.back();
  if (fraction == 0.5) {  // llama.cpp's median: the middle value or the mean of the middle two
    const size_t n = v.size();
    return n % 2 == 0 ? 0.5 * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
  }
  double p = fraction * static_cast<double>(v.size() - 1);
  const size_t ip = static_cast<size_t>(p);
  p -= static_cast<double>(ip);
  return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
}

namespace {

struct MeanErr {
  double mean = 0, err = 0;
};

MeanErr mean_and_uncertainty(double sum, double sum2, size_t n) {
  if (n < 1) return {};
  const double f = sum / static_cast<double>(n);
  const double df = sum2 / static_cast<double>(n) - f * f;
  return {f, df > 0 && n > 10 ? std::sqrt(df / static_cast<double>(n - 1)) : 0.0};
}

double covariance(double sa, double sb, double sab, size_t n) {
  if (n < 10) return 0;
  const double N = static_cast<double>(n);
  return (sab / N - (sa / N) * (sb / N)) / (N - 1);
}

double sqrt0(double x) { return x > 0 ? std::sqrt(x) : 0.0; }

}  // namespace

KlStats kl_statistics(const std::vector<StepStat>& steps) {
  KlStats s;
  const size_t n = steps.size();
  s.count = static_cast<int>(n);
  if (n == 0) return s;
  double nll = 0, nll2 = 0, base = 0, base2 = 0, cross = 0, kld = 0, kld2 = 0, dp = 0, dp2 = 0, dp4 = 0;
  size_t same = 0;
  std::vector<double> klds, dps;
  klds.reserve(n);
  dps.reserve(n);
  for (const StepStat& x : steps) {
    nll += x.nll, nll2 += x.nll * x.nll;
    base += x.nll_base, base2 += x.nll_base * x.nll_base;
    cross += x.nll * x.nll_base;
    kld += x.kld, kld2 += x.kld * x.kld;
    const double d2 = x.dp * x.dp;
    dp += x.dp, dp2 += d2, dp4 += d2 * d2;
    same += x.same_top;
    klds.push_back(x.kld);
    dps.push_back(x.dp);
  }
  const MeanErr lq = mean_and_uncertainty(nll, nll2, n), lb = mean_and_uncertainty(base, base2, n);
  const double cov = covariance(nll, base, cross, n);
  s.ppl = std::exp(lq.mean);
  s.ppl_err = s.ppl * lq.err;
  s.ppl_base = std::exp(lb.mean);
  s.ppl_base_err = s.ppl_base * lb.err;
  s.ln_ppl_cor = lq.err > 0 && lb.err > 0 ? cov / (lq.err * lb.err) : 0.0;
  s.ln_ppl_ratio = lq.mean - lb.mean;
  s.ln_ppl_ratio_err = sqrt0(lq.err * lq.err + lb.err * lb.err - 2.0 * cov);
  s.ppl_ratio = std::exp(s.ln_ppl_ratio);
  s.ppl_ratio_err = s.ppl_ratio * s.ln_ppl_ratio_err;
  s.ppl_diff = s.ppl - s.ppl_base;
  s.ppl_diff_err = sqrt0(s.ppl_err * s.ppl_err + s.ppl_base_err * s.ppl_base_err - 2.0 * s.ppl * s.ppl_base * cov);
  const MeanErr k = mean_and_uncertainty(kld, kld2, n);
  s.kld_mean = k.mean;
  s.kld_err = k.err;
  std::sort(klds.begin(), klds.end());
  std::sort(dps.begin(), dps.end());
  for (int i = 0; i < KlStats::kKldLevels; ++i) s.kld_pct[i] = sorted_percentile(klds, kKldLevelFractions[i]);
  for (int i = 0; i < KlStats::kDpLevels; ++i) s.dp_pct[i] = sorted_percentile(dps, kDpLevelFractions[i]);
  const MeanErr d = mean_and_uncertainty(dp, dp2, n);
  s.dp_mean = d.mean;
  s.dp_err = d.err;
  const MeanErr mse = mean_and_uncertainty(dp2, dp4, n);
  s.dp_rms = std::sqrt(mse.mean);
  s.dp_rms_err = s.dp_rms > 0 ? 0.5 / s.dp_rms * mse.err : 0.0;
  s.same_top = static_cast<double>(same) / static_cast<double>(n);
  s.same_top_err = n > 1 ? sqrt0(s.same_top * (1 - s.same_top) / static_cast<double>(n - 1)) : 0.0;
  return s;
}

std::vector<std::pair<std::string, double>> kl_stat_fields(const KlStats& s) {
  std::vector<std::pair<std::string, double>> f;
  f.emplace_back("next_token_kl_err", s.kld_err);
  for (int i = 0; i < KlStats::kKldLevels; ++i) f.emplace_back(std::string("kld_") + kKldLevelNames[i], s.kld_pct[i]);
  f.emplace_back("dp_mean", s.dp_mean);
  f.emplace_back("dp_mean_err", s.dp_err);
  for (int i = 0; i < KlStats::kDpLevels; ++i) f.emplace_back(std::string("dp_") + kDpLevelNames[i], s.dp_pct[i]);
  f.emplace_back("dp_rms", s.dp_rms);
  f.emplace_back("dp_rms_err", s.dp_rms_err);
  f.emplace_back("same_top_p_err", s.same_top_err);
  f.emplace_back("ppl_err", s.ppl_err);
  f.emplace_back("ppl_ref_err", s.ppl_base_err);
  f.emplace_back("ppl_delta_err", s.ppl_diff_err);
  f.emplace_back("ppl_ratio", s.ppl_ratio);
  f.emplace_back("ppl_ratio_err", s.ppl_ratio_err);
  f.emplace_back("ln_ppl_ratio", s.ln_ppl_ratio);
  f.emplace_back("ln_ppl_ratio_err", s.ln_ppl_ratio_err);
  f.emplace_back("ln_ppl_cor", s.ln_ppl_cor);
  return f;
}

bool kl_stats_from_fields(const std::vector<std::pair<std::string, double>>& fields, KlStats& s) {
  s = KlStats{};
  bool any = false;
  auto set = [&](const std::string& name, double v) {
    auto is = [&](const char* n) { return name == n; };
    if (is("steps")) s.count = static_cast<int>(v);
    else if (is("ppl")) s.ppl = v;
    else if (is("ppl_ref")) s.ppl_base = v;
    else if (is("ppl_delta")) s.ppl_diff = v;
    else if (is("next_token_kl")) s.kld_mean = v;
    else if (is("greedy_match_ratio")) s.same_top = v;
    else {
      any = any || name == "next_token_kl_err";
      for (const auto& [n, p] : std::initializer_list<std::pair<const char*, double*>>{
               {"next_token_kl_err", &s.kld_err},       {"dp_mean", &s.dp_mean},
               {"dp_mean_err", &s.dp_err},              {"dp_rms", &s.dp_rms},
               {"dp_rms_err", &s.dp_rms_err},           {"same_top_p_err", &s.same_top_err},
               {"ppl_err", &s.ppl_err},                 {"ppl_ref_err", &s.ppl_base_err},
               {"ppl_delta_err", &s.ppl_diff_err},      {"ppl_ratio", &s.ppl_ratio},
               {"ppl_ratio_err", &s.ppl_ratio_err},     {"ln_ppl_ratio", &s.ln_ppl_ratio},
               {"ln_ppl_ratio_err", &s.ln_ppl_ratio_err}, {"ln_ppl_cor", &s.ln_ppl_cor}})
        if (name == n) *p = v;
      for (int i = 0; i < KlStats::kKldLevels; ++i)
        if (name == std::string("kld_") + kKldLevelNames[i]) s.kld_pct[i] = v;
      for (int i = 0; i < KlStats::kDpLevels; ++i)
        if (name == std::string("dp_") + kDpLevelNames[i]) s.dp_pct[i] = v;
    }
  };
  for (const auto& [name, v] : fields) set(name, v);
  return any;
}

std::string kl_stats_block(const KlStats& s) {
  std::string o;
  o += "====== Perplexity statistics ======\n";
  o += fmt::format("Mean PPL(Q)                   : {:10.6f} ± {:10.6f}\n", s.ppl, s.ppl_err);
  o += fmt::format("Mean PPL(base)                : {:10.6f} ± {:10.6f}\n", s.ppl_base, s.ppl_base_err);
  o += fmt::format("Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2f}%\n", 100.0 * s.ln_ppl_cor);
  o += fmt::format("Mean ln(PPL(Q)/PPL(base))     : {:10.6f} ± {:10.6f}\n", s.ln_ppl_ratio, s.ln_ppl_ratio_err);
  o += fmt::format("Mean PPL(Q)/PPL(base)         : {:10.6f} ± {:10.6f}\n", s.ppl_ratio, s.ppl_ratio_err);
  o += fmt::format("Mean PPL(Q)-PPL(base)         : {:10.6f} ± {:10.6f}\n", s.ppl_diff, s.ppl_diff_err);
  o += "\n====== KL divergence statistics ======\n";
  o += fmt::format("Mean    KLD: {:10.6f} ± {:10.6f}\n", s.kld_mean, s.kld_err);
  static const char* const kKldLabels[KlStats::kKldLevels] = {"Maximum KLD", "99.9%   KLD", "99.0%   KLD", "95.0%   KLD",
                                                              "90.0%   KLD", "Median  KLD", "10.0%   KLD", " 5.0%   KLD",
                                                              " 1.0%   KLD", " 0.1%   KLD", "Minimum KLD"};
  for (int i = 0; i < KlStats::kKldLevels; ++i) o += fmt::format("{}: {:10.6f}\n", kKldLabels[i], s.kld_pct[i]);
  o += "\n====== Token probability statistics ======\n";
  o += fmt::format("Mean    Δp: {:6.3f} ± {:5.3f} %\n", 100.0 * s.dp_mean, 100.0 * s.dp_err);
  static const char* const kDpLabels[KlStats::kDpLevels] = {"Maximum Δp", "99.9%   Δp", "99.0%   Δp", "95.0%   Δp", "90.0%   Δp",
                                                            "75.0%   Δp", "Median  Δp", "25.0%   Δp", "10.0%   Δp", " 5.0%   Δp",
                                                            " 1.0%   Δp", " 0.1%   Δp", "Minimum Δp"};
  for (int i = 0; i < KlStats::kDpLevels; ++i) o += fmt::format("{}: {:6.3f}%\n", kDpLabels[i], 100.0 * s.dp_pct[i]);
  o += fmt::format("RMS Δp    : {:6.3f} ± {:5.3f} %\n", 100.0 * s.dp_rms, 100.0 * s.dp_rms_err);
  o += fmt::format("Same top p: {:6.3f} ± {:5.3f} %\n", 100.0 * s.same_top, 100.0 * s.same_top_err);
  return o;
}

}  // namespace kvscope
