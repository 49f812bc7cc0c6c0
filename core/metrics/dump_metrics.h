#pragma once
// The tensor and attention metrics of a quantized dump, measured on its dequantized K/V against
// the original (quantize_dump quantizes, this measures; ALGORITHMS.md §7). Aggregates merge sums
// over heads, never average per-head ratios.
#include <atomic>
#include <functional>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"

namespace kvscope {

// A dump's K/V after quantize -> dequantize, in the dump's layout: what quantize_dump produces and
// measure_dump measures (and the GUI's drill-down shows).
struct DequantizedKV {
  std::vector<std::vector<float>> k, v;  // per layer [kv_heads, tokens, head_dim]
};

struct MeasureOptions {
  bool attention = true;    // attention-level metrics (needs Q in the dump)
  int attn_queries = 256;   // sampled query positions per head; <= 0 means every position
  const std::atomic<bool>* cancel = nullptr;  // checked per head; throws Cancelled (core/util/cancelled.h)
  std::function<void(int64_t units)> progress;  // work units done (1 per slice, 4 per attention head), from workers
};

struct DumpMetrics {
  std::vector<HeadMetrics> per_head;  // layer-major, then head, k before v; error fields and elements only
  ErrorSums k, v;                     // over every K / V slice
  std::vector<AttentionMetrics> attention;  // layer-major, then KV head; empty without attention
  AttentionMetrics attention_all;           // merged over every (layer, KV head)
  int attn_queries = 0;                     // sampled query positions per head (0 = no attention metrics)
};

// `dq` has the dump's layout. Throws Error when attention is asked and the dump has no queries.
DumpMetrics measure_dump(const KvDump& dump, const DequantizedKV& dq, const MeasureOptions& options = {});

}  // namespace kvscope
