#pragma once
// The reference side of a replay: what the fp16 cache predicts at every scored step of every item.
// Computed in the run (one item at a time), once per (model, workload) for a sweep, or read back from
// a base-distribution file (`kvscope replay --save-base F` / `--base F`) so the reference is decoded
// once and every method compares against the same numbers, bit for bit.
//
// File format (little-endian; docs/REPLAY.md "Base-distribution files"):
//   8 bytes  "KVSBASE1"
//   u32      n = length of the header
//   n bytes  header JSON: {"format": "kvscope-base", "version": 1, "model": id, "model_hash": "fnv1a64:...",
//            "vocab": V, "logits": "f32", "workload": desc, "slices": [{"name", "kind", "items": [{"prompt",
//            "target", "steps", "max_new", "answer", "decode_seconds", "decode_steps", "peak_bits"}]}]}
//   then per slice, per item: i32 prompt[prompt], i32 target[target], i32 fed[steps], f32 logits[steps][V]
// The logits are the reference's own f32 logits (not 16-bit log-probabilities, as llama.cpp stores):
// every statistic computed from them is bit-identical to an in-run reference, and an fp16 cache gives
// exactly 0 KL (16-bit log-probs move a KL of 1e-4 by ~1e-4, and the fp16 one away from 0).
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/replay/workload.h"

namespace kvscope {

// The fp16 reference cache's pass over one item.
struct ReferenceItem {
  std::vector<int32_t> fed;     // [steps] tokens fed (text: the target; generation: the reference's greedy tokens)
  std::vector<float> logits;    // [steps, vocab] the logits that predict fed[s]
  double decode_seconds = 0;    // wall time of the reference's decode forwards
  int decode_steps = 0;
  uint64_t peak_bits = 0;       // the reference cache's stored bits at the end
};

struct BaseDistribution {
  std::string model_id, model_hash;  // the model's name and identity hash (model_identity_hash)
  std::string workload;              // the workload as given (for messages)
  int vocab = 0;
  std::vector<WorkloadSlice> slices;                // the workload it was made on (token ids)
  std::vector<std::vector<ReferenceItem>> items;    // [slice][item]
};

// Runs the reference (fp16 cache) over one item: prefill, then teacher forcing / greedy continuation.
// `cancel` (may be null) stops it with Error("replay: interrupted").
ReferenceItem run_reference_item(const Model& model, const WorkloadItem& it, const std::atomic<bool>* cancel = nullptr);

// Runs the reference over every item of the slices. `progress` (may be empty) gets one line per item.
BaseDistribution compute_base(const Model& model, const std::vector<WorkloadSlice>& slices,
                              const std::function<void(const std::string&)>& progress = {},
                              const std::atomic<bool>* cancel = nullptr);

void save_base(const std::string& path, const BaseDistribution& base);
// Reads a file written by save_base; Error naming the file for anything malformed.
BaseDistribution load_base(const std::string& path);
// Error (one line naming `path`) when `base` was made with another model (vocab or identity hash,
// when both are known) or on another workload (slices, items or token ids differ).
void check_base_matches(const BaseDistribution& base, const std::string& path, const std::string& model_hash, int vocab,
                        const std::vector<WorkloadSlice>& slices);

}  // namespace kvscope
