#pragma once
// Quantize a whole dump under a policy: quantize_slices produces the dequantized cache and the
// exact bit accounting (nothing measured); quantize_dump adds core/metrics' tensor and attention
// metrics on that result and assembles the report: the one entry point the CLI, the GUI's live
// tuning, the run store and sweeps call.
#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/metrics/dump_metrics.h"
#include "core/policy/policy.h"
#include "core/quant/method_registry.h"
#include "core/quant/report.h"
#include "core/util/cancelled.h"

namespace kvscope {

struct QuantizeOptions {
  int attn_queries = 256;   // sampled query positions per head; <= 0 means every position
  bool attention = true;    // compute attention-level metrics (needs Q in the dump)
  const std::atomic<bool>* cancel = nullptr;  // set to true to abandon; quantize_dump throws Cancelled
  std::function<void(double)> progress;       // fraction done, called from worker threads
  bool keep_dequantized = false;              // fill DequantizedDump (GUI drill-down)
};

// Cancelled (thrown when `cancel` is set) lives in core/util/cancelled.h, included above.

// What quantization produced: the reconstruction and the exact bit accounting of every slice.
struct QuantizedDump {
  DequantizedKV dequantized;        // the dump's layout
  std::vector<SliceResult> slices;  // layer-major, then KV head, k before v
};

// Quantizes every (layer, KV head, kind) with the policy's method (KVSmooth applied around
// per-head methods). Uses opts.cancel; opts.progress receives the fraction of slices done.
QuantizedDump quantize_slices(const KvDump& dump, const Policy& policy, const QuantizeOptions& opts = {});

// quantize_slices, then measure_dump (core/metrics/dump_metrics.h), then the report's aggregates.
QuantizeReport quantize_dump(const KvDump& dump, const Policy& policy, const QuantizeOptions& opts = {},
                             DequantizedKV* dequantized = nullptr);

}  // namespace kvscope
