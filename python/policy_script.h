#pragma once
// Policy scripts: seed 002's editable `AdaptiveQuantPolicy` class, run by the embedded
// interpreter to plan an ordinary Policy, so quantize, sweeps, the heatmap and the run store see
// rules and overrides as from a JSON policy.
//
//   BASE = "kivi-2"            # a preset name or a JSON policy file (relative to the script);
//                              # hooks the class does not define keep the base's settings
//   BUDGET = {"max_avg_bits": 3, "bit_range": [2, 8]}   # optional: the policy's budget
//   HEAD_GROUP_SIZE = 1        # optional: KV heads per head_group
//   class AdaptiveQuantPolicy:
//       def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state) -> int
//       def choose_axis(self, layer_id, kv_kind) -> str            # "token" | "channel" | "head"
//       def residual_length(self, layer_id, request_meta) -> int
//       def calibration_mode(self, workload_meta, budget_state) -> str   # "none" | "text" | "online"
//       # optional: quantizer_family, group_size, sink_tokens, clip_ratio, symmetric, outliers_ratio,
//       # use_attentions, last_n_attentions, target_quantization_error, q_norm (all
//       # (layer_id, kv_kind, request_meta)) and bit_range(layer_id, kv_kind, request_meta, budget_state)
//
// Planning calls each static hook once per (layer, kind[, head group]) in layer-major order, K
// before V. token_stats is a dict of numpy float32 arrays over the block's tokens (on a dump, the
// whole sequence is one block): "absmax", "mean", "variance" shaped [heads in group, head_dim]
// (per channel) and "head_norms" [heads in group] (mean L2 norm of a token's vector), plus
// "tokens" and "heads" (the KV head indices). budget_state: "max_avg_bits" (0 = none),
// "bits_spent" (nominal bits summed over the (layer, kind, head) entries decided so far; fp16 = 16),
// "entries_done", "entries_total", "bits_left" (max_avg_bits * entries_total - bits_spent, or
// None), "tokens". request_meta / workload_meta: "model", "layers", "kv_heads", "head_dim",
// "tokens", "source" ("dump" | "replay").
//
// C++ stays in charge: every return value is type-checked, bits must lie in bit_range and the
// budget's [min, max] (16 = keep fp16), and a choice that leaves fewer bits than the budget's
// minimum for every entry still undecided is refused as overspending. Errors are one line naming
// the script: "<file>:<line>: <Type>: <message> (in choose_bits(layer_id=0, ...))" for an exception,
// "<file>: choose_bits(layer_id=0, kv_kind='k', ...) returned 'x': must be an int" otherwise.
// The planned Policy's "script" record holds the path, source, hash, every decision and the bits
// per (layer, kind, head).
#include <string>

#include "core/policy/policy.h"

namespace kvscope {

struct KvDump;

struct ScriptTarget {
  std::string model_id;
  int layers = 0, kv_heads = 0, head_dim = 0, tokens = 0;
  std::string source = "dump";   // "dump" | "replay" (request_meta["source"])
  const KvDump* dump = nullptr;  // token_stats are computed from it; null = token_stats None
};

bool is_policy_script(const std::string& path);  // a ".py" file

// Compiles and runs the script's module and checks that it defines the class: a SyntaxError (or an
// exception at import) is an Error before anything is computed. Returns the source text.
std::string check_policy_script(const std::string& path);

// Plans the policy for `target`.
Policy plan_policy_script(const std::string& path, const ScriptTarget& target);

}  // namespace kvscope
