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
  double est_bits_per_element = 0;  // instant estimate for the edited policy
  double est_bytes_per_token = 0;
  double measured_bits_per_element = 0;  // from the latest finished quantization (0 = none yet)
  std::string status;                    // "re-quantizing...", "up to date", an error
};

struct PolicyEditorIntent {
  bool changed = false;    // the policy differs from last frame
  bool committed = false;  // ...and the user let go (mouse released, item picked): re-quantize now
  std::string load_preset;
  int remove_override = -1;
  bool save_run = false;
  bool save_policy = false;  // write the JSON to `policy_path`
};

PolicyEditorIntent draw_policy_editor(Policy& policy, std::string& policy_path, const PolicyEditorInfo& info);

}  // namespace kvscope::views
