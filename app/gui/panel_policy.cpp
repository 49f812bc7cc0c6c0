// Sidebar: the policy editor. Every change re-quantizes the open dump in the background (drags
// debounced, releases at once); the size estimate is instant, the measured one follows.
#include <imgui.h>

#include "app/gui/policy_tuning.h"
#include "app/gui/shell.h"
#include "core/quant/method_registry.h"
#include "core/util/error.h"

namespace kvscope::gui {

void policy_panel(Shell& s) {
  Workspace& ws = s.ws;
  views::PolicyEditorInfo info;
  info.presets = s.preset_names;
  info.methods = method_names();
  if (ws.dump()) {
    CostEstimate e;
    try {
      e = estimate_cost(ws.policy(), ws.dump()->header());
    } catch (const Error& err) {
      info.status = err.what();
    }
    info.est_bits_per_element = e.bits_per_element;
    info.est_bytes_per_token = e.bytes_per_token;
  }
  if (ws.report()) info.measured_bits_per_element = ws.report()->bits_per_element;
  if (info.status.empty()) info.status = ws.status();
  views::PolicyEditorIntent in =
      views::draw_policy_editor(ws.policy(), s.policy_path, s.override_draft, info, ws.dump() ? ws.dump()->shape().layers : 0,
                                ws.dump() ? ws.dump()->shape().kv_heads : 0);
  if (const QuantMethod* m = find_method(in.method)) ws.policy().method = m;  // the method combo
  if (!in.load_preset.empty()) ws.load_preset(in.load_preset);
  else if (!in.add_override.empty()) ws.add_override(in.add_override);
  else if (in.remove_override >= 0) ws.remove_override(in.remove_override);
  else if (in.changed) ws.policy_edited(in.committed);
  else if (in.committed) ws.policy_edited(true);
  if (in.save_run) ws.save_run();
  if (in.save_policy) ws.save_policy(s.policy_path);
  // A policy script (.py, AdaptiveQuantPolicy) at the path above: planned now and on every save.
  if (ImGui::Button("Open policy script")) ws.open_policy_script(s.policy_path);
  if (!ws.policy_script().empty()) {
    ImGui::SameLine();
    ImGui::TextDisabled("watching %s", ws.policy_script().c_str());
    ImGui::SameLine();
    if (ImGui::SmallButton("stop")) ws.close_policy_script();
  }
}

}  // namespace kvscope::gui
