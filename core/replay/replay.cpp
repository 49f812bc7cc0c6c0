#include "core/replay/replay.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "core/quant/method_registry.h"
#include "core/replay/calibration.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void check_cancel(const ReplayOptions& o) {
  if (o.cancel && o.cancel->load()) throw Error("replay: interrupted");
}

// The quantized prefill: the prompt's forward, online calibration on its activations when the
// policy asks for it, then the quantization of what leaves the window.
// "avg 2.75 bits; K 2:10 4:6; V 2:4 3:12" (fp16 heads as 16), for the progress line.
std::string plan_summary(const std::vector<HeadQuantPlan>& plans) {
  std::map<int, int> hist[2];
  for (size_t i = 0; i < plans.size(); ++i) ++hist[i % 2][plans[i].quant.full_precision ? 16 : plans[i].quant.bits];
  std::string s = fmt::format("avg {:.3g} bits;", nominal_bits_of_plans(plans));
  for (int kind = 0; kind < 2; ++kind) {
    s += kind == 0 ? " K" : "; V";
    for (auto [b, n] : hist[kind]) s += fmt::format(" {}:{}", b, n);
  }
  return s;
}

// A method that fits its coder to the calibration (WaterSIC: its key Hessian) sets the positions it needs
// per head_dim (QuantMethod::calibration_tokens_per_head_dim). WaterSIC: on a few dozen positions that Hessian is
// poorly conditioned and new keys get large codes (docs/REPLAY.md: key error above the key energy on
// the QA prompts). 4 x head_dim is where the measurements turn bad, not a derived bound.
void warn_short_calibration(const Policy& policy, const ModelConfig& cfg, int tokens, const ReplayOptions& o) {
  const int per_dim = policy.method->calibration_tokens_per_head_dim;
  if (per_dim <= 0 || !o.progress || tokens >= per_dim * cfg.head_dim) return;
  o.progress(fmt::format("replay: warning: {} calibrated on {} positions (< {} x head_dim = {}): the key Hessian is "
                         "poorly conditioned; calibrate on text with more tokens (docs/REPLAY.md)",
                         policy.method->name, tokens, per_dim, per_dim * cfg.head_dim));
}

std::vector<float> prefill_quantized(const Model& model, const Policy& policy, QuantizedKvCache& cache,
                                     std::span<const int32_t> prompt, const ReplayOptions& o) {
  const double bit_budget = o.bit_budget;
  std::vector<float> logits;
  if (cache.awaiting_calibration()) {
    CalibrationCollector col(model.config(), policy.calibration.tokens);
    ForwardOptions fo;
    fo.capture = &col.hook();
    logits = model.forward(prompt, cache, fo);
    const Calibration calib = col.finish();
    cache.calibrate(calib);
    if (o.progress) o.progress("replay: online calibration: " + plan_summary(cache.plans()));
    warn_short_calibration(policy, model.config(), calib.tokens, o);
    check_plans_budget(cache.plans(), policy, bit_budget);
  } else {
    logits = model.forward(prompt, cache);
  }
  cache.flush();
  return logits;
}

std::vector<int32_t> greedy_quantized(const Model& model, const Policy& policy, const std::vector<HeadQuantPlan>& plans,
                                      const WorkloadItem& it, const ReplayOptions& o, std::vector<BlockChoice>& blocks) {
  QuantizedKvCache cache(model.config(), policy, plans, static_cast<int>(it.prompt.size()) + it.max_new);
  if (o.block_hook) cache.set_block_hook(o.block_hook);
  std::vector<float> logits = prefill_quantized(model, policy, cache, it.prompt, o);
  std::vector<int32_t> out;
  for (int i = 0; i < it.max_new; ++i) {
    check_cancel(o);
    out.push_back(argmax(logits));
    if (i + 1 < it.max_new) logits = model.forward(std::span<const int32_t>(&out.back(), 1), cache);
  }
  blocks = cache.block_choices();
  return out;
}

}  // namespace

std::vector<std::pair<std::string, double>> SliceMetrics::base_fields() const {
  return {{"quality_main", quality_main},
          {"quality_delta_vs_ref", quality_delta_vs_ref},
          {"peak_kv_memory_mb", peak_kv_memory_mb},
          {"decode_tokens_per_s", decode_tokens_per_s},
          {"prefill_latency_ms", prefill_latency_ms},
          {"calibration_cost_s", calibration_cost_s},
          {"avg_bits_per_kv_token", avg_bits_per_kv_token},
          {"cache_error", cache_error},
          {"greedy_match_ratio", greedy_match_ratio},
          {"next_token_kl", next_token_kl},
          {"ppl_delta", ppl_delta},
          {"ppl", ppl},
          {"ppl_ref", ppl_ref},
          {"quality_ref", quality_ref},
          {"ref_peak_kv_memory_mb", ref_peak_kv_memory_mb},
          {"ref_decode_tokens_per_s", ref_decode_tokens_per_s},
          {"contains_rate", contains_rate},
          {"steps", static_cast<double>(steps)},
          {"items", static_cast<double>(items)}};
}

std::vector<std::pair<std::string, double>> SliceMetrics::fields() const {
  std::vector<std::pair<std::string, double>> f = base_fields();
  for (auto& kv : kl_stat_fields(kl)) f.push_back(std::move(kv));
  return f;
}

std::string test_metrics_line(const SliceMetrics& m) {
  std::string s = "TEST_METRICS: slice=" + m.slice;
  for (const auto& [k, v] : m.fields()) s += fmt::format(" {}={:.6g}", k, v);
  return s;
}

double nominal_bits_per_entry(const ModelConfig& cfg, const Policy& policy, const Calibration* calib) {
  return nominal_bits_of_plans(plan_replay_heads(cfg, policy, calib));
}

void check_bit_budget(const ModelConfig& cfg, const Policy& policy, double cap) {
  if (needs_calibration(policy)) {  // outlier rules still fail here when there is no calibration mode
    if (policy.calibration.mode == CalibrationSpec::Mode::None) plan_replay_heads(cfg, policy);
    return;
  }
  check_plans_budget(plan_replay_heads(cfg, policy), policy, cap);
}

void check_plans_budget(const std::vector<HeadQuantPlan>& plans, const Policy& policy, double cap) {
  const double bits = nominal_bits_of_plans(plans);
  const std::string where = "policy " + (policy.name.empty() ? std::string("(unnamed)") : policy.name);
  if (policy.budget.max_avg_bits > 0 && bits > policy.budget.max_avg_bits)
    fail(where, "$.budget.max_avg_bits: the policy averages {:.4g} bits per KV entry on this model, over the budget of {:.4g}",
         bits, policy.budget.max_avg_bits);
  if (cap > 0 && bits > cap)
    fail(where, "averages {:.4g} bits per KV entry on this model, over the budget of {:.4g} (--bit-budget)", bits, cap);
}

std::vector<SliceMetrics> run_replay(const Model& model, const Tokenizer& tok, const std::vector<WorkloadSlice>& slices,
                                     const Policy& policy, const ReplayOptions& o) {
  const ModelConfig& cfg = model.config();
  check_bit_budget(cfg, policy, o.bit_budget);  // policy errors before any compute
  // Text calibration: once, before the replay; its plans serve every item.
  std::vector<HeadQuantPlan> plans;
  double text_calib_s = 0;
  if (needs_calibration(policy) && policy.calibration.mode == CalibrationSpec::Mode::Text) {
    if (o.progress) o.progress(fmt::format("replay: calibrating on {} ({} tokens at most)", policy.calibration.text, policy.calibration.tokens));
    const auto t0 = Clock::now();
    const Calibration calib = calibrate_on_text(model, tok, policy.calibration, "policy " + policy.name);
    plans = plan_replay_heads(cfg, policy, &calib);
    text_calib_s = seconds_since(t0);
    if (o.progress) o.progress(fmt::format("replay: text calibration ({} tokens, {:.3f} s): {}", calib.tokens, text_calib_s, plan_summary(plans)));
    warn_short_calibration(policy, cfg, calib.tokens, o);
    check_plans_budget(plans, policy, o.bit_budget);
  }
  if (o.base && (o.base->slices.size() != slices.size() || o.base->items.size() != slices.size()))
    fail("replay", "the base distribution has {} slices, the workload {}", o.base->slices.size(), slices.size());
  std::vector<SliceMetrics> out;
  for (size_t si = 0; si < slices.size(); ++si) {
    const WorkloadSlice& slice = slices[si];
    SliceMetrics m;
    m.slice = slice.name;
    m.kind = workload_kind_name(slice.kind);
    double nll = 0, nll_ref = 0, kl = 0, decode_s = 0, ref_decode_s = 0, prefill_s = 0;
    int matches = 0, contains = 0, contains_ref = 0, decode_steps = 0;
    double hits = 0, hits_ref = 0;  // task scores summed (0/1 per text step or per exact-match item; [0, 1] per scored item)
    double bits = 0, elements = 0, sq_err = 0, sq_norm = 0, peak_bits = 0, ref_peak_bits = 0;
    std::vector<StepStat> step_stats;
    if (o.base && o.base->items[si].size() != slice.items.size())
      fail("replay", "the base distribution's slice {} has {} items, the workload's {}", slice.name, o.base->items[si].size(),
           slice.items.size());
    for (size_t idx = 0; idx < slice.items.size(); ++idx) {
      const WorkloadItem& it = slice.items[idx];
      if (o.progress) o.progress(fmt::format("replay: {} item {}/{}", slice.name, idx + 1, slice.items.size()));
      const bool generate = it.target.empty();
      const int steps = generate ? it.max_new : static_cast<int>(it.target.size());
      const int reserve = static_cast<int>(it.prompt.size()) + steps;
      if (reserve > cfg.max_position_embeddings)
        fail(slice.name, "item {} needs {} positions, the model supports {}", idx + 1, reserve, cfg.max_position_embeddings);
      // The reference's predictions: given, or the fp16 cache's pass over the item now.
      ReferenceItem own;
      const ReferenceItem& ref = o.base ? o.base->items[si][idx] : (own = run_reference_item(model, it, o.cancel));
      const size_t V = static_cast<size_t>(cfg.vocab_size);
      if (ref.fed.size() != static_cast<size_t>(steps) || ref.logits.size() != V * steps)
        fail("replay", "the base distribution's {} item {} has {} steps of {} logits, the replay needs {} of {}", slice.name,
             idx + 1, ref.fed.size(), ref.fed.empty() ? 0 : ref.logits.size() / ref.fed.size(), steps, V);
      QuantizedKvCache q_cache(cfg, policy, plans, reserve);
      if (o.block_hook) q_cache.set_block_hook(o.block_hook);
      std::vector<BlockChoice> greedy_blocks;

      check_cancel(o);
      auto t0 = Clock::now();
      // The prefill's quantization (and online calibration) is part of the prefill.
      std::vector<float> q_logits = prefill_quantized(model, policy, q_cache, it.prompt, o);
      prefill_s += seconds_since(t0);

      bool all_match = true;
      const size_t first_step = step_stats.size();
      const double hits_before = hits, hits_ref_before = hits_ref;
      for (int s = 0; s < steps; ++s) {
        check_cancel(o);
        const std::span<const float> ref_logits(ref.logits.data() + V * s, V);
        const int32_t ref_top = argmax(ref_logits), q_top = argmax(q_logits);
        const int32_t next = ref.fed[s];
        const StepStat st = step_stat(ref_logits, q_logits, next);
        step_stats.push_back(st);
        kl += st.kld;
        nll_ref += st.nll_base;
        nll += st.nll;
        if (ref_top == q_top) ++matches;
        else all_match = false;
        if (!generate) {
          hits_ref += ref_top == next;
          hits += q_top == next;
        }
        ++m.steps;
        if (s + 1 == steps) break;
        const std::span<const int32_t> one(&ref.fed[s], 1);
        auto q0 = Clock::now();
        q_logits = model.forward(one, q_cache);
        decode_s += seconds_since(q0);
        ++decode_steps;
      }
      ref_decode_s += ref.decode_seconds;
      const std::vector<int32_t>& fed = ref.fed;
      q_cache.flush();
      bits += static_cast<double>(q_cache.stored_bits());
      elements += static_cast<double>(q_cache.elements());
      sq_err += q_cache.squared_error();
      sq_norm += q_cache.squared_norm();
      peak_bits = std::max(peak_bits, static_cast<double>(q_cache.peak_stored_bits()));
      ref_peak_bits = std::max(ref_peak_bits, static_cast<double>(ref.peak_bits));
      m.calibration_cost_s += q_cache.calibration_seconds();
      if (o.progress && q_cache.coded_elements() > 0)  // docs/REPLAY.md: new codes beyond the calibration's width
        o.progress(fmt::format("replay: {} item {}: watersic clamped {} of {} codes to the calibration's code width", slice.name,
                               idx + 1, q_cache.clamped_codes(), q_cache.coded_elements()));

      if (generate) {
        const std::string ref_text = tok.decode(fed);
        // Teacher forcing and free-running greedy agree until the first mismatch; only then rerun.
        const std::string q_text = all_match ? ref_text : tok.decode(greedy_quantized(model, policy, plans, it, o, greedy_blocks));
        const bool passkey = slice.kind == WorkloadKind::Passkey;
        auto score = [&](const std::string& out) -> double {
          if (!it.answers.empty()) return score_answer(it.scorer, out, it.answers);  // core/replay/scoring.h
          return passkey ? answer_contains(out, it.answer) : answer_exact_match(out, it.answer);
        };
        hits_ref += score(ref_text);
        hits += score(q_text);
        contains_ref += answer_contains(ref_text, it.answer);
        contains += answer_contains(q_text, it.answer);
      }
      {
        const std::vector<StepStat> mine(step_stats.begin() + static_cast<ptrdiff_t>(first_step), step_stats.end());
        const KlStats k = kl_statistics(mine);
        ItemResult ir;
        ir.prompt_tokens = static_cast<int>(it.prompt.size());
        ir.steps = static_cast<int>(mine.size());
        const double denom_item = generate ? 1.0 : std::max<double>(1, ir.steps);
        ir.score = (hits - hits_before) / denom_item;
        ir.score_ref = (hits_ref - hits_ref_before) / denom_item;
        ir.kld_mean = k.kld_mean;
        ir.kld_p99 = k.kld_pct[2];
        ir.kld_max = k.kld_pct[0];
        ir.dp_mean = k.dp_mean;
        ir.same_top = k.same_top;
        ir.ppl = k.ppl;
        ir.ppl_ref = k.ppl_base;
        if (!it.chat_text.empty()) {
          ir.chat_text = it.chat_text;
          ir.prompt_ids = it.prompt;
        }
        ir.blocks = q_cache.block_choices();
        ir.greedy_blocks = std::move(greedy_blocks);
        m.item_results.push_back(ir);
      }
      ++m.items;
    }
    m.calibration_cost_s += text_calib_s;  // the one text calibration serves every slice
    const double n_steps = std::max(1, m.steps);
    const double denom = slice.kind == WorkloadKind::Text ? n_steps : std::max(1, m.items);
    m.quality_main = hits / denom;
    m.quality_ref = hits_ref / denom;
    m.quality_delta_vs_ref = m.quality_main - m.quality_ref;
    m.contains_rate = contains / static_cast<double>(std::max(1, m.items));
    m.contains_rate_ref = contains_ref / static_cast<double>(std::max(1, m.items));
    m.peak_kv_memory_mb = peak_bits / 8.0 / (1024.0 * 1024.0);
    m.ref_peak_kv_memory_mb = ref_peak_bits / 8.0 / (1024.0 * 1024.0);
    m.decode_tokens_per_s = decode_s > 0 ? decode_steps / decode_s : 0;
    m.ref_decode_tokens_per_s = ref_decode_s > 0 ? decode_steps / ref_decode_s : 0;
    m.prefill_latency_ms = 1000.0 * prefill_s / std::max(1, m.items);
    m.avg_bits_per_kv_token = elements > 0 ? bits / elements : 0;
    m.cache_error = sq_norm > 0 ? sq_err / sq_norm : 0;
    m.greedy_match_ratio = matches / n_steps;
    m.next_token_kl = kl / n_steps;
    m.ppl = std::exp(nll / n_steps);
    m.ppl_ref = std::exp(nll_ref / n_steps);
    m.ppl_delta = m.ppl - m.ppl_ref;
    m.kl = kl_statistics(step_stats);
    {
      std::vector<double> klds;
      for (const StepStat& x : step_stats) klds.push_back(x.kld);
      std::sort(klds.begin(), klds.end());
      for (int k = 0; k <= 100; ++k) m.kld_quantiles.push_back(sorted_percentile(klds, k / 100.0));
    }
    out.push_back(m);
  }
  return out;
}

}  // namespace kvscope
