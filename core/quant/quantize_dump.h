#pragma once
// Quantize a whole dump under a policy and measure it: the one entry point the CLI, the GUI's
// live tuning, the run store and sweeps call.
#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"
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

// Dequantized K/V (same layout as the dump) for drill-down views; filled only on request.
struct DequantizedKV {
  std::vector<std::vector<float>> k, v;  // per layer [kv_heads, tokens, head_dim]
};

QuantizeReport quantize_dump(const KvDump& dump, const Policy& policy, const QuantizeOptions& opts = {},
                             DequantizedKV* dequantized = nullptr);

}  // namespace kvscope
