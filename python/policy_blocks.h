#pragma once
// Replay's per-block hook of a policy script: AdaptiveQuantPolicy.choose_bits(layer_id, kv_kind,
// head_group, token_stats, budget_state) asked by QuantizedKvCache each time a block of tokens of
// one (layer, kind, head group) leaves the residual window (core/replay/block_hook.h: which tokens
// form a block). token_stats are those of the block's tokens (python/policy_script.h's dict);
// budget_state is per cache (one item's replay):
//   "max_avg_bits" (0 = none), "bits_spent" (bits x entries over the blocks decided so far, an entry
//   being one token of one head; fp16 = 16), "entries_done", "block_entries" (this block's tokens x
//   heads), "bits_left" (max_avg_bits x (entries_done + block_entries) - bits_spent: what this block
//   may spend in all, or None), "tokens" (tokens cached in the layer), "block" (its index),
//   "first_token".
// C++ checks the value: an int 1..8 inside the (layer, kind)'s bit range (bit_range hook or the
// budget's), or 16 (fp16) when the range allows it, and the budget: the bits spent over all blocks
// decided so far may not exceed max_avg_bits per entry. Errors are one line naming the script, the
// call and the value; an exception is "<file>:<line>: <Type>: <message> (in choose_bits(...))".
#include <memory>
#include <string>

#include "core/policy/policy.h"
#include "core/replay/block_hook.h"

namespace kvscope {

struct ScriptTarget;

class ScriptBlockHook : public BlockBitsHook {
 public:
  // `planned` is the policy plan_policy_script made for the same target (source "replay"): its budget
  // and the bit_range decisions bound the choices. Null when the script defines no choose_bits.
  static std::unique_ptr<ScriptBlockHook> create(const std::string& path, const Policy& planned, const ScriptTarget& target);
  ~ScriptBlockHook() override;

  int choose_bits(const KvBlock& block) override;
  void begin_cache() override;

  // Time inside choose_bits (token statistics, the Python call, the checks) and the number of calls,
  // since creation.
  double seconds() const;
  long long calls() const;

 private:
  ScriptBlockHook();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvscope
