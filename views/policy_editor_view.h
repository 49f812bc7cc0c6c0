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

// `layers`, `kv_heads`: the open dump's shape, to validate the override row (0 = unknown).
PolicyEditorIntent draw_policy_editor(Policy& policy, std::string& policy_path, OverrideDraft& draft,
                                      const PolicyEditorInfo& info, int layers, int kv_heads);

}  // namespace kvscope::views
