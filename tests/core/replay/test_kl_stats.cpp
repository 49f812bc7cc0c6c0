// KL / Δp / perplexity statistics (core/replay/kl_stats.h) on hand-worked distributions and step lists.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "core/replay/kl_stats.h"

using namespace kvscope;
using Catch::Matchers::WithinAbs;

namespace {
constexpr double kExact = 1e-12;      // closed forms evaluated in double
constexpr double kFloatLogits = 1e-6; // logits given as floats (log 0.5 etc. rounded to 2^-24 relative)
constexpr double kHand = 5e-7;        // values worked out by hand to 7 significant digits
}  // namespace

TEST_CASE("log_softmax of [0, ln 3] is [-ln 4, ln 3 - ln 4]", "[kl_stats]") {
  // softmax([0, ln 3]) = [1, 3] / 4 = [0.25, 0.75]; log: [-1.3862944, -0.2876821].
  const std::vector<float> logits = {0.0f, static_cast<float>(std::log(3.0))};
  const auto lp = log_softmax(logits);
  REQUIRE_THAT(lp[0], WithinAbs(-1.3862944, kHand));
  REQUIRE_THAT(lp[1], WithinAbs(-0.2876821, kHand));
  // Shifting every logit by a constant changes nothing.
  const std::vector<float> shifted = {100.0f, 100.0f + static_cast<float>(std::log(3.0))};
  REQUIRE_THAT(log_softmax(shifted)[0], WithinAbs(-1.3862944, 1e-5));  // 100 + ln 3 rounds to 2^-17
}

TEST_CASE("KL, Δp, nll and top of one step on hand-worked distributions", "[kl_stats]") {
  // P = [0.5, 0.25, 0.25], Q = [0.25, 0.5, 0.25] (logits = log-probs + 3).
  // KL(P||Q) = 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.5) + 0.25 ln 1 = 0.25 ln 2 = 0.1732868.
  // Fed token 0: P(y) = 0.5, Q(y) = 0.25 -> Δp = -0.25, nll = ln 4 = 1.3862944, nll_base = ln 2 = 0.6931472.
  // argmax P = 0, argmax Q = 1 -> not the same top.
  auto lg = [](double p) { return static_cast<float>(std::log(p) + 3.0); };
  const std::vector<float> p = {lg(0.5), lg(0.25), lg(0.25)}, q = {lg(0.25), lg(0.5), lg(0.25)};
  const StepStat s = step_stat(p, q, 0);
  REQUIRE_THAT(s.kld, WithinAbs(0.1732868, kFloatLogits));
  REQUIRE_THAT(s.dp, WithinAbs(-0.25, kFloatLogits));
  REQUIRE_THAT(s.nll, WithinAbs(1.3862944, kFloatLogits));
  REQUIRE_THAT(s.nll_base, WithinAbs(0.6931472, kFloatLogits));
  REQUIRE_FALSE(s.same_top);
  // Token 2: P = Q = 0.25 -> Δp = 0; KL does not depend on the token.
  const StepStat t = step_stat(p, q, 2);
  REQUIRE_THAT(t.dp, WithinAbs(0.0, kFloatLogits));
  REQUIRE_THAT(t.kld, WithinAbs(0.1732868, kFloatLogits));
  // KL(Q||P) = 0.25 ln(0.25/0.5) + 0.5 ln(0.5/0.25) = 0.25 ln 2 too (a symmetric pair), KL(P||P) = 0 exactly.
  REQUIRE_THAT(step_stat(q, p, 1).kld, WithinAbs(0.1732868, kFloatLogits));
  const StepStat same = step_stat(p, p, 1);
  REQUIRE(same.kld == 0.0);
  REQUIRE(same.dp == 0.0);
  REQUIRE(same.same_top);
  // An asymmetric pair: P = [0.9, 0.1], Q = [0.6, 0.4]:
  // KL = 0.9 ln 1.5 + 0.1 ln 0.25 = 0.9 * 0.4054651 - 0.1386294 = 0.3649186 - 0.1386294 = 0.2262892.
  const std::vector<float> p2 = {lg(0.9), lg(0.1)}, q2 = {lg(0.6), lg(0.4)};
  REQUIRE_THAT(step_stat(p2, q2, 1).kld, WithinAbs(0.2262892, kFloatLogits));
  REQUIRE_THAT(step_stat(p2, q2, 1).dp, WithinAbs(0.3, kFloatLogits));  // Q(1) - P(1) = 0.4 - 0.1
}

TEST_CASE("percentiles interpolate as llama.cpp does", "[kl_stats]") {
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  REQUIRE(sorted_percentile(v, 1) == 12);
  REQUIRE(sorted_percentile(v, 0) == 1);
  REQUIRE(sorted_percentile(v, 0.5) == 6.5);                          // mean of the middle two
  REQUIRE_THAT(sorted_percentile(v, 0.9), WithinAbs(10.9, kExact));   // 0.9 * 11 = 9.9 -> v[9] + 0.9 (v[10] - v[9])
  REQUIRE_THAT(sorted_percentile(v, 0.999), WithinAbs(11.989, kExact));  // 10.989 -> 11 + 0.989
  REQUIRE_THAT(sorted_percentile(v, 0.1), WithinAbs(2.1, kExact));    // 1.1 -> 2 + 0.1
  REQUIRE(sorted_percentile({3, 1, 2}, 0.5) == 1);                    // odd count: the middle value (input is sorted by the caller)
}

TEST_CASE("slice statistics on a hand-worked list of 12 steps", "[kl_stats]") {
  // Step i = 1..12: kld = i/100, nll_base = i/10, nll = i/10 + 0.05, Δp = (i - 6.5)/100, same top for i <= 9.
  std::vector<StepStat> steps;
  for (int i = 1; i <= 12; ++i) steps.push_back({i / 100.0, i / 10.0 + 0.05, i / 10.0, (i - 6.5) / 100.0, i <= 9});
  const KlStats s = kl_statistics(steps);
  REQUIRE(s.count == 12);
  // KLD: mean 0.065; population variance of 1..12 = (12^2 - 1)/12 = 11.916667 (x 1e-4);
  // err = sqrt(11.916667 / 11) / 100 = 0.01040833.
  REQUIRE_THAT(s.kld_mean, WithinAbs(0.065, kExact));
  REQUIRE_THAT(s.kld_err, WithinAbs(0.01040833, kHand));
  REQUIRE_THAT(s.kld_pct[0], WithinAbs(0.12, kExact));     // max
  REQUIRE_THAT(s.kld_pct[1], WithinAbs(0.11989, kExact));  // 99.9 %
  REQUIRE_THAT(s.kld_pct[4], WithinAbs(0.109, kExact));    // 90 %
  REQUIRE_THAT(s.kld_pct[5], WithinAbs(0.065, kExact));    // median
  REQUIRE_THAT(s.kld_pct[10], WithinAbs(0.01, kExact));    // min
  // ln PPL(base) = mean nll_base = 0.65, err_b = 0.1 * 1.040833 = 0.1040833; PPL(base) = e^0.65 = 1.9155408.
  // ln PPL(Q) = 0.70, the same err; PPL(Q) = e^0.7 = 2.0137527. nll - nll_base is constant: cov = err_b^2,
  // Cor = 100 %, ln ratio = 0.05 ± 0, ratio = e^0.05 = 1.0512711 ± 0.
  REQUIRE_THAT(s.ppl_base, WithinAbs(1.9155408, kHand));
  REQUIRE_THAT(s.ppl, WithinAbs(2.0137527, kHand));
  REQUIRE_THAT(s.ppl_base_err, WithinAbs(1.9155408 * 0.1040833, 1e-6));  // 0.1993762
  REQUIRE_THAT(s.ln_ppl_cor, WithinAbs(1.0, 1e-9));
  REQUIRE_THAT(s.ln_ppl_ratio, WithinAbs(0.05, 1e-12));
  REQUIRE_THAT(s.ln_ppl_ratio_err, WithinAbs(0.0, 1e-6));
  REQUIRE_THAT(s.ppl_ratio, WithinAbs(1.0512711, kHand));
  // PPL(Q) - PPL(base) = 0.0982119 ± sqrt(e^2 (P^2 + B^2 - 2PB)) = e |P - B| = 0.1040833 * 0.0982119 = 0.0102222.
  REQUIRE_THAT(s.ppl_diff, WithinAbs(0.0982119, kHand));
  REQUIRE_THAT(s.ppl_diff_err, WithinAbs(0.0102222, 1e-6));
  // Δp: mean 0 ± 0.01040833 (the same spread as the KLD); RMS = sqrt(11.916667e-4) = 0.0345205.
  // Δp^2 x 1e4: 30.25 20.25 12.25 6.25 2.25 0.25 (twice): mean 11.916667; Δp^4 x 1e8 sums to
  // 2 (915.0625 + 410.0625 + 150.0625 + 39.0625 + 5.0625 + 0.0625) = 3038.75, mean 253.22917;
  // var = 253.22917 - 11.916667^2 = 111.22222 -> err(Δp^2) = sqrt(111.22222 / 11) 1e-4 = 3.179797e-4;
  // RMS err = 0.5 / 0.0345205 * 3.179797e-4 = 4.605666e-3.
  REQUIRE_THAT(s.dp_mean, WithinAbs(0.0, 1e-15));
  REQUIRE_THAT(s.dp_err, WithinAbs(0.01040833, kHand));
  REQUIRE_THAT(s.dp_rms, WithinAbs(0.0345205, kHand));
  REQUIRE_THAT(s.dp_rms_err, WithinAbs(4.605666e-3, 1e-8));
  REQUIRE_THAT(s.dp_pct[6], WithinAbs(0.0, 1e-15));     // median
  REQUIRE_THAT(s.dp_pct[5], WithinAbs(0.0275, kExact));  // 75 %: 0.75 * 11 = 8.25 -> (9 - 6.5) + 0.25 = 2.75 (x 1e-2)
  // Same top: 9 of 12 = 75 % ± sqrt(0.75 * 0.25 / 11) = 13.0558 %.
  REQUIRE_THAT(s.same_top, WithinAbs(0.75, kExact));
  REQUIRE_THAT(s.same_top_err, WithinAbs(0.130558, kHand));
}

TEST_CASE("uncertainties are 0 below 11 steps, as in llama.cpp", "[kl_stats]") {
  std::vector<StepStat> steps;
  for (int i = 1; i <= 10; ++i) steps.push_back({i / 100.0, 1.0 + i / 10.0, i / 10.0, 0.01 * i, true});
  const KlStats s = kl_statistics(steps);
  REQUIRE(s.kld_err == 0);
  REQUIRE(s.ppl_err == 0);
  REQUIRE(s.ln_ppl_cor == 0);  // undefined without uncertainties: reported as 0
  REQUIRE(s.same_top_err == 0);
  REQUIRE(kl_statistics({}).count == 0);
}

TEST_CASE("the statistics round-trip through their named fields and print in llama.cpp's layout", "[kl_stats]") {
  std::vector<StepStat> steps;
  for (int i = 1; i <= 40; ++i) steps.push_back({i / 1000.0, 2.0 + std::sin(i), 2.0 + std::cos(i), (i % 7 - 3) / 100.0, i % 5 != 0});
  const KlStats s = kl_statistics(steps);
  std::vector<std::pair<std::string, double>> fields = kl_stat_fields(s);
  fields.push_back({"steps", 40});
  fields.push_back({"ppl", s.ppl});
  fields.push_back({"ppl_ref", s.ppl_base});
  fields.push_back({"ppl_delta", s.ppl_diff});
  fields.push_back({"next_token_kl", s.kld_mean});
  fields.push_back({"greedy_match_ratio", s.same_top});
  KlStats back;
  REQUIRE(kl_stats_from_fields(fields, back));
  REQUIRE(kl_stats_block(back) == kl_stats_block(s));
  const std::string block = kl_stats_block(s);
  REQUIRE(block.find("====== KL divergence statistics ======\nMean    KLD:   0.020500 ±") != std::string::npos);
  REQUIRE(block.find("Maximum KLD:   0.040000\n") != std::string::npos);
  REQUIRE(block.find("Same top p: 80.000 ±") != std::string::npos);
  KlStats none;
  REQUIRE_FALSE(kl_stats_from_fields({{"steps", 3}, {"ppl", 2}}, none));
}
