#pragma once
// Incremental re-quantization for live tuning (no ImGui). Every (layer, KV head, kind) slice has a
// key: its effective settings under the policy (method, TensorQuant after overrides and rules,
// fp16 head/tail rows). A policy change re-quantizes only the slices whose key changed (V bits
// leave K alone; a one-head fp16 override touches one slice) and re-measures attention only for
// the (layer, KV head) pairs whose K or V changed. A background pass delivers results a layer at a
// time, reading the dump through DumpSource (one layer resident), and the report is assembled from
// the cache exactly as quantize_dump assembles it (bit-identical; tests/app/test_gui_live_quant.cpp).
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "app/gui/dump_source.h"
#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"
#include "core/policy/policy.h"
#include "core/quant/head_plan.h"
#include "core/quant/quantized_tensor.h"
#include "core/quant/report.h"

namespace kvscope::gui {

// Keys of every slice, layer-major, then KV head, K before V (quantize_dump's order). Empty when
// the policy cannot be quantized slice by slice (it needs statistics over the whole dump): the
// caller then recomputes everything with quantize_dump.
std::vector<std::string> slice_keys(const KvDump& header, const Policy& p, std::vector<HeadPlan>* plans = nullptr);

struct SliceOutcome {
  std::string key;  // empty: never computed
  HeadMetrics metrics;
  ErrorSums sums;
  uint64_t static_bits = 0;
};
struct AttentionOutcome {
  std::string key;  // K key + V key of the pair; empty: never computed
  int positions = 0;
  AttentionSums sums;
};

// What one background pass computes (made on the UI thread from the cache and the new keys).
struct LivePass {
  uint64_t gen = 0;
  Policy policy;
  std::vector<HeadPlan> plans;        // every slice
  std::vector<std::string> keys;      // every slice
  std::vector<size_t> slices;         // to re-quantize, ascending
  std::vector<size_t> attention;      // (layer * kv_heads + head) to re-measure, ascending
  std::vector<int> positions;         // query positions; empty with `attention`: choose them first
  double attention_budget_s = 1.0;    // what choosing aims a whole-dump attention pass at
};

// One layer's fresh results.
struct LayerUpdate {
  uint64_t gen = 0;
  int layer = 0;
  std::vector<std::pair<size_t, SliceOutcome>> slices;
  std::vector<std::pair<size_t, AttentionOutcome>> attention;
};

// Mailbox from the background pass to the UI thread.
class UpdateInbox {
 public:
  void push(LayerUpdate u);
  std::vector<LayerUpdate> take();

 private:
  std::mutex mu_;
  std::vector<LayerUpdate> updates_;
};

// Query positions per head so that measuring every (layer, KV head) takes about `budget_s` on
// worker_threads() threads: times one head (its reconstruction and 16 positions) and scales.
// Between kMinPositions and kMaxPositions (and at most `tokens`).
inline constexpr int kMinPositions = 8, kMaxPositions = 256;
int choose_query_positions(const DumpSource& src, const LivePass& pass, double budget_s);

// Tensor pass over pass.slices, then attention over pass.attention, a layer at a time, pushing
// one LayerUpdate per layer and phase. Throws Cancelled when `cancel` is set. `progress` gets the
// fraction done.
void run_live_pass(const DumpSource& src, const LivePass& pass, const std::atomic<bool>& cancel, UpdateInbox& inbox,
                   const std::function<void(double)>& progress);

// The report of the cached results: per_head holds the computed slices, attention the measured
// pairs; aggregates merge them in quantize_dump's order, so with every slice computed (and every
// pair measured at `positions`) it equals quantize_dump(dump, policy, {attn_queries}) except wall_seconds.
QuantizeReport assemble_report(const KvDump& header, const Policy& policy, const std::vector<SliceOutcome>& slices,
                               const std::vector<AttentionOutcome>& attention, int positions);

}  // namespace kvscope::gui
