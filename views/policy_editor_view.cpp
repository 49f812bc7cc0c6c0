#include "views/policy_editor_view.h"

#include <algorithm>

#include <imgui_stdlib.h>

#include <nlohmann/json.hpp>

#include "views/index_list.h"

namespace kvscope::views {

namespace {

// Tracks change / commit of the last widget into the intent.
void track(PolicyEditorIntent& in, bool edited) {
  if (edited) in.changed = true;
  if (ImGui::IsItemDeactivatedAfterEdit()) in.committed = true;
}

void tensor_quant(const char* label, TensorQuant& q, PolicyEditorIntent& in) {
  ImGui::PushID(label);
  ImGui::TextUnformatted(label);
  ImGui::SameLine(60);
  bool fp = q.full_precision;
  if (ImGui::Checkbox("fp16", &fp)) {
    q.full_precision = fp;
    in.changed = in.committed = true;
  }
  if (!q.full_precision) {
    ImGui::SetNextItemWidth(-140);
    track(in, ImGui::SliderInt("bits", &q.bits, q.symmetric ? 2 : 1, 8));
    static const char* kAxes[] = {"token", "channel", "head"};
    int axis = static_cast<int>(q.axis);
    ImGui::SetNextItemWidth(-140);
    if (ImGui::Combo("axis", &axis, kAxes, 3)) {
      q.axis = static_cast<Axis>(axis);
      in.changed = in.committed = true;
    }
    ImGui::SetNextItemWidth(-140);
    track(in, ImGui::SliderInt("group size", &q.group_size, 0, 256, q.group_size == 0 ? "whole axis" : "%d"));
    ImGui::SetNextItemWidth(-140);
    float clip = static_cast<float>(q.clip_ratio);
    if (ImGui::SliderFloat("clip ratio", &clip, 0.5f, 1.0f, "%.2f")) {
      q.clip_ratio = clip;
      in.changed = true;
    }
    if (ImGui::IsItemDeactivatedAfterEdit()) in.committed = true;
    if (ImGui::Checkbox("symmetric", &q.symmetric)) {
      if (q.symmetric && q.bits < 2) q.bits = 2;
      in.changed = in.committed = true;
    }
  }
  ImGui::PopID();
}

// The script's decisions under a collapsing header: a row per layer.
void script_decisions(const ScriptDecisionTable& t) {
  if (t.script.empty()) return;
  ImGui::Separator();
  if (!ImGui::CollapsingHeader("Script decisions", ImGuiTreeNodeFlags_DefaultOpen)) return;
  ImGui::TextWrapped("%s on base %s: %d decisions; choose_bits %s", t.script.c_str(), t.base.c_str(), t.decisions,
                     t.choose_bits.c_str());
  std::string hooks;
  for (const auto& h : t.hooks) {
    if (!hooks.empty()) hooks += ", ";
    hooks += h;
  }
  ImGui::TextDisabled("hooks: %s", hooks.c_str());
  auto bits_text = [](const std::vector<int>& b) {
    std::string s;
    for (int x : b) {
      if (!s.empty()) s += ' ';
      s += x == 16 ? std::string("fp16") : std::to_string(x);
    }
    return s;
  };
  if (ImGui::BeginTable("script_decisions", 4, ImGuiTableFlags_Borders | ImGuiTableFlags_RowBg | ImGuiTableFlags_SizingFixedFit)) {
    ImGui::TableSetupColumn("layer");
    ImGui::TableSetupColumn(t.head_group_size > 1 ? "K bits / head group" : "K bits / head");
    ImGui::TableSetupColumn(t.head_group_size > 1 ? "V bits / head group" : "V bits / head");
    ImGui::TableSetupColumn("residual");
    ImGui::TableHeadersRow();
    for (const auto& r : t.rows) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::Text("%d", r.layer);
      ImGui::TableNextColumn();
      ImGui::Text("%s%s%s", bits_text(r.k_bits).c_str(), r.k_axis.empty() ? "" : "  ", r.k_axis.c_str());
      ImGui::TableNextColumn();
      ImGui::Text("%s%s%s", bits_text(r.v_bits).c_str(), r.v_axis.empty() ? "" : "  ", r.v_axis.c_str());
      ImGui::TableNextColumn();
      ImGui::Text("%d", r.residual);
    }
    ImGui::EndTable();
  }
}

}  // namespace

ScriptDecisionTable script_decision_table(const Policy& p) {
  ScriptDecisionTable t;
  if (p.script_json.empty()) return t;
  const nlohmann::json rec = nlohmann::json::parse(p.script_json, nullptr, false);
  if (rec.is_discarded() || !rec.is_object()) return t;
  const std::string path = rec.value("path", std::string());
  t.script = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  t.base = rec.value("base", std::string());
  t.choose_bits = rec.value("choose_bits", std::string("planned"));
  for (const auto& h : rec.value("hooks", nlohmann::json::array())) t.hooks.push_back(h.get<std::string>());
  t.head_group_size = std::max(1, p.head_group_size);
  const nlohmann::json bits = rec.value("bits", nlohmann::json::object());
  const size_t layers = bits.contains("k") ? bits["k"].size() : 0;
  for (size_t l = 0; l < layers; ++l) {
    ScriptDecisionTable::Row r;
    r.layer = static_cast<int>(l);
    for (const char* kind : {"k", "v"}) {
      const nlohmann::json& heads = bits[kind].at(l);
      auto& out = kind[0] == 'k' ? r.k_bits : r.v_bits;
      for (size_t h = 0; h < heads.size(); h += static_cast<size_t>(t.head_group_size)) out.push_back(heads[h].get<int>());
    }
    r.residual = residual_of(p, r.layer);
    t.rows.push_back(std::move(r));
  }
  for (const auto& d : rec.value("decisions", nlohmann::json::array())) {
    ++t.decisions;
    if (d.value("hook", "") != "choose_axis") continue;
    const int l = d.value("layer", -1);
    if (l < 0 || l >= static_cast<int>(t.rows.size())) continue;
    (d.value("kind", "") == "k" ? t.rows[l].k_axis : t.rows[l].v_axis) = d.value("value", std::string());
  }
  return t;
}

PolicyEditorIntent draw_policy_editor(Policy& p, std::string& policy_path, OverrideDraft& draft, const PolicyEditorInfo& info,
                                      int layers, int kv_heads) {
  PolicyEditorIntent in;
  ImGui::PushID("policy_editor");
  if (ImGui::BeginCombo("preset", p.name.empty() ? "(custom)" : p.name.c_str())) {
    for (const auto& name : info.presets)
      if (ImGui::Selectable(name.c_str(), name == p.name)) in.load_preset = name;
    ImGui::EndCombo();
  }
  const std::string current = method_name(p.method);
  if (ImGui::BeginCombo("method", current.c_str())) {
    for (const std::string& m : info.methods)
      if (ImGui::Selectable(m.c_str(), m == current)) {
        in.method = m;
        in.changed = in.committed = true;
      }
    ImGui::EndCombo();
  }
  ImGui::Separator();
  tensor_quant("K", p.k, in);
  ImGui::Separator();
  tensor_quant("V", p.v, in);
  ImGui::Separator();
  ImGui::SetNextItemWidth(-140);
  track(in, ImGui::SliderInt("residual window", &p.residual, 0, 1024));
  ImGui::SetNextItemWidth(-140);
  track(in, ImGui::SliderInt("sink tokens", &p.sink_tokens, 0, 64));

  static const char* kRules[] = {"none", "list", "K MSE over median", "K MSE share", "top count"};
  int rule = static_cast<int>(p.outliers.rule);
  ImGui::SetNextItemWidth(-140);
  if (ImGui::Combo("outlier heads", &rule, kRules, 5)) {
    p.outliers.rule = static_cast<OutlierSelect::Rule>(rule);
    in.changed = in.committed = true;
  }
  if (p.outliers.rule == OutlierSelect::Rule::MseOverMedian) {
    float r = static_cast<float>(p.outliers.ratio);
    ImGui::SetNextItemWidth(-140);
    if (ImGui::SliderFloat("threshold x median", &r, 1.0f, 50.0f, "%.1f", ImGuiSliderFlags_Logarithmic)) {
      p.outliers.ratio = r;
      in.changed = true;
    }
    if (ImGui::IsItemDeactivatedAfterEdit()) in.committed = true;
  } else if (p.outliers.rule == OutlierSelect::Rule::MseShare) {
    float s = static_cast<float>(p.outliers.share);
    ImGui::SetNextItemWidth(-140);
    if (ImGui::SliderFloat("share of K MSE", &s, 0.1f, 1.0f, "%.2f")) {
      p.outliers.share = s;
      in.changed = true;
    }
    if (ImGui::IsItemDeactivatedAfterEdit()) in.committed = true;
  } else if (p.outliers.rule == OutlierSelect::Rule::Count) {
    ImGui::SetNextItemWidth(-140);
    track(in, ImGui::SliderInt("heads kept", &p.outliers.count, 0, 32));
  }

  if (!p.overrides.empty()) {
    ImGui::TextDisabled("overrides (right-click a heatmap cell to toggle fp16):");
    for (int i = 0; i < static_cast<int>(p.overrides.size()); ++i) {
      ImGui::PushID(i);
      if (ImGui::SmallButton("x")) in.remove_override = i;
      ImGui::SameLine();
      ImGui::TextUnformatted(p.overrides[i].json.c_str());
      ImGui::PopID();
    }
  } else {
    ImGui::TextDisabled("right-click a heatmap cell to keep that head in fp16");
  }

  // Add an override: layers x heads x kind -> fp16 or a bit width.
  ImGui::TextDisabled("add override (empty = all):");
  ImGui::SetNextItemWidth(80);
  ImGui::InputTextWithHint("##ov_layers", "layers", &draft.layers);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(60);
  ImGui::InputTextWithHint("##ov_heads", "heads", &draft.heads);
  ImGui::SameLine();
  static const char* kKinds[] = {"k", "v", "kv"};
  ImGui::SetNextItemWidth(50);
  ImGui::Combo("##ov_kind", &draft.kind, kKinds, 3);
  ImGui::Checkbox("fp16##ov", &draft.fp16);
  if (!draft.fp16) {
    ImGui::SameLine();
    ImGui::SetNextItemWidth(90);
    ImGui::SliderInt("bits##ov", &draft.bits, 1, 8);
  }
  ImGui::SameLine();
  auto ls = parse_index_list(draft.layers, layers > 0 ? layers : 1 << 16);
  auto hs = parse_index_list(draft.heads, kv_heads > 0 ? kv_heads : 1 << 16);
  ImGui::BeginDisabled(!ls || !hs);
  if (ImGui::SmallButton("Add")) {
    nlohmann::json o = nlohmann::json::object();
    if (!ls->empty()) o["layers"] = *ls;
    if (!hs->empty()) o["heads"] = *hs;
    o["kind"] = kKinds[draft.kind];
    if (draft.fp16) o["fp16"] = true;
    else o["bits"] = draft.bits;
    in.add_override = o.dump();
  }
  ImGui::EndDisabled();
  if (!ls || !hs) ImGui::TextDisabled("layers/heads: numbers and ranges like 0-3, 8 within the dump");

  script_decisions(script_decision_table(p));
  ImGui::Separator();
  ImGui::Text("bits / element  ~%.3f (estimate)", info.est_bits_per_element);
  if (info.measured_bits_per_element > 0) {
    ImGui::SameLine();
    ImGui::TextDisabled("measured %.3f", info.measured_bits_per_element);
  }
  ImGui::Text("bytes / token   ~%.0f", info.est_bytes_per_token);
  if (!info.status.empty()) ImGui::TextWrapped("%s", info.status.c_str());
  if (ImGui::Button("Save run")) in.save_run = true;
  ImGui::SameLine();
  if (ImGui::Button("Save policy")) in.save_policy = true;
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##policy_path", "policy.json path", &policy_path);
  ImGui::PopID();
  if (!in.load_preset.empty() || in.remove_override >= 0 || !in.add_override.empty()) in.changed = in.committed = true;
  return in;
}

}  // namespace kvscope::views
