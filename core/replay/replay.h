#pragma once
// Replay: run each workload item with the full-precision (fp16) reference cache and with the
// policy's QuantizedKvCache in lockstep, feeding both the same tokens (teacher forcing: the text for
// text workloads, the reference's greedy continuation for generation workloads), and measure what
// the quantized cache does to the next-token distribution. Metric definitions: docs/REPLAY.md.
#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/policy/policy.h"
#include "core/replay/base_distribution.h"
#include "core/replay/block_hook.h"
#include "core/replay/kl_stats.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/replay/workload.h"
#include "core/tokenizer/tokenizer.h"

namespace kvscope {

// One workload item's results (per-item rows of the run store, `kvscope runs show`).
struct ItemResult {
  int prompt_tokens = 0, steps = 0;
  double score = 0, score_ref = 0;  // text: top-1 accuracy over the item's steps; jsonl: exact match; passkey: contains
  double kld_mean = 0, kld_p99 = 0, kld_max = 0;  // next-token KL over the item's steps
  double dp_mean = 0, same_top = 0;
  double ppl = 0, ppl_ref = 0;
  std::string chat_text;            // --chat: the rendered text the prompt encodes ("" otherwise)
  std::vector<int32_t> prompt_ids;  // --chat: the prompt's token ids (empty otherwise)
  // Per-block bits chosen by ReplayOptions::block_hook: the teacher-forced pass, and the free-running
  // greedy rerun of a generation item whose greedy tokens diverged (empty otherwise).
  std::vector<BlockChoice> blocks, greedy_blocks;
};

struct SliceMetrics {
  std::string slice;
  std::string kind;  // text | jsonl | passkey
  int items = 0;
  int steps = 0;  // scored next-token predictions
  double quality_main = 0, quality_ref = 0, quality_delta_vs_ref = 0;
  double peak_kv_memory_mb = 0, ref_peak_kv_memory_mb = 0;
  double decode_tokens_per_s = 0, ref_decode_tokens_per_s = 0;
  double prefill_latency_ms = 0;
  double calibration_cost_s = 0;
  double avg_bits_per_kv_token = 0;
  double cache_error = 0;
  double greedy_match_ratio = 0;
  double next_token_kl = 0;
  double ppl = 0, ppl_ref = 0, ppl_delta = 0;
  double contains_rate = 0, contains_rate_ref = 0;  // generation workloads
  KlStats kl;  // llama.cpp's KL / Δp / PPL statistics over the slice's steps (core/replay/kl_stats.h)
  std::vector<ItemResult> item_results;  // one per item, in order
  // The per-step KLD distribution: kld_quantiles[k] = percentile k / (size - 1) (101 values, 0..1).
  std::vector<double> kld_quantiles;

  // name -> value, in the order of the TEST_METRICS line (the 19 original fields, then kl_stat_fields).
  std::vector<std::pair<std::string, double>> fields() const;
  std::vector<std::pair<std::string, double>> base_fields() const;  // the 19 original fields only
};

struct ReplayOptions {
  std::function<void(const std::string&)> progress;  // one line per item
  const std::atomic<bool>* cancel = nullptr;          // set -> Error("replay: interrupted")
  double bit_budget = 0;  // > 0: also refuse plans above this average (--bit-budget), checked after calibration
  // The reference's predictions, computed beforehand (a --base file, or once per workload in a sweep);
  // null: run the fp16 reference item by item. Must match the slices (check_base_matches).
  const BaseDistribution* base = nullptr;
  // Per-block bits (core/replay/block_hook.h), e.g. a policy script's choose_bits; null = the plan's.
  BlockBitsHook* block_hook = nullptr;
};

// The average nominal bits per KV entry the policy asks for (16 for fp16 heads), for budget checks.
// Policies whose plan depends on calibration (needs_calibration) need `calib`.
double nominal_bits_per_entry(const ModelConfig& cfg, const Policy& policy, const Calibration* calib = nullptr);
// Error when the nominal bits exceed the policy's $.budget.max_avg_bits or `cap` (> 0, e.g. --bit-budget).
// Without a calibration, a policy that needs one is not checked here (replay checks it once planned).
void check_bit_budget(const ModelConfig& cfg, const Policy& policy, double cap = 0);
void check_plans_budget(const std::vector<HeadQuantPlan>& plans, const Policy& policy, double cap);

std::vector<SliceMetrics> run_replay(const Model& model, const Tokenizer& tok, const std::vector<WorkloadSlice>& slices,
                                     const Policy& policy, const ReplayOptions& opts = {});

// "TEST_METRICS: slice=<name> quality_main=... ..." (seed 002's parser reads key=value pairs).
std::string test_metrics_line(const SliceMetrics& m);

}  // namespace kvscope
