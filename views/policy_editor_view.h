#pragma once
// Policy editor: method, bits, axis, group size, residual window, sinks, clip ratio, outlier-head
// rule and the per-head fp16 overrides of a Policy the caller owns. Reports whether the user
// changed something (while dragging) or committed it (slider released, combo picked), so the
// caller can debounce re-quantization.
#include <string>
#include <vector>

#include <imgui.h>

#include "core/policy/policy.h"

namespace kvscope::views {

struct PolicyEditorInfo {
  std::vector<std::string> presets;
  std::vector<std::string> methods;  // the method combo's entries (the registry's names)
  double est_bits_per_element = 0;  // instant estimate for the edited policy
  double est_bytes_per_token = 0;
  double measured_bits_per_element = 0;  // from the latest finished quantization (0 = none yet)
  std::string status;                    // "re-quantizing...", "up to date", an error
};

// The "add override" row's text, owned by the caller between frames.
struct OverrideDraft {
  std::string layers, heads;  // "0-3, 8"; empty = all
  int kind = 0;               // 0 = k, 1 = v, 2 = kv
  bool fp16 = true;
  int bits = 4;
};

struct PolicyEditorIntent {
  bool changed = false;    // the policy differs from last frame
  bool committed = false;  // ...and the user let go (mouse released, item picked): re-quantize now
  std::string load_preset;
  std::string method;      // a name from info.methods the user picked (the caller switches the policy's method)
  int remove_override = -1;
  std::string add_override;  // JSON of a new override (validated by the caller through parse_policy)
  bool save_run = false;
  bool save_policy = false;  // write the JSON to `policy_path`
};

// What a policy script decided (its record, Policy::script_json), as the editor lists it: one row per
// layer with the bits of each head group per kind, the axis when the script chose it, and the residual.
struct ScriptDecisionTable {
  std::string script;      // the script's file name ("" = the policy is not a script's)
  std::string base;        // its BASE
  std::string choose_bits;  // "planned", "per block" (replay) or "not defined"
  std::vector<std::string> hooks;
  int head_group_size = 1;
  struct Row {
    int layer = 0;
    std::vector<int> k_bits, v_bits;  // per head group (16 = fp16)
    std::string k_axis, v_axis;       // "" = not chosen by the script
    int residual = 0;
  };
  std::vector<Row> rows;
  int decisions = 0;  // every hook call recorded
};
ScriptDecisionTable script_decision_table(const Policy& policy);

// `layers`, `kv_heads`: the open dump's shape, to validate the override row (0 = unknown).
PolicyEditorIntent draw_policy_editor(Policy& policy, std::string& policy_path, OverrideDraft& draft,
                                      const PolicyEditorInfo& info, int layers, int kv_heads);

}  // namespace kvscope::views
