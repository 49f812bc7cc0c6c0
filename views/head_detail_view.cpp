#include "views/head_detail_view.h"

#include <algorithm>
#include <string>

#include "views/heatmap_model.h"
#include "views/heatmap_view.h"

namespace kvscope::views {

namespace {

// Bars of `a` (solid) and `b` (outline, optional) per channel, outliers in red (of the unrotated head).
void channel_bars(const HeadProfile& p, const std::vector<float>& a, const std::vector<float>& b, ImVec2 size) {
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImVec2 o = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton(&a == &p.channel_max_abs ? "bars" : "bars_rotated", size);
  int n = static_cast<int>(a.size());
  if (n == 0) return;
  float top = *std::max_element(a.begin(), a.end());
  if (!b.empty()) top = std::max(top, *std::max_element(b.begin(), b.end()));
  for (const auto* both : {&p.channel_max_abs, &p.channel_max_abs_rotated})  // one scale for before / after rotation
    if (!both->empty()) top = std::max(top, *std::max_element(both->begin(), both->end()));
  if (top <= 0) top = 1;
  dl->AddRectFilled(o, ImVec2(o.x + size.x, o.y + size.y), ImGui::GetColorU32(ImGuiCol_FrameBg));
  float w = size.x / n;
  std::vector<bool> outlier(n, false);
  if (&a == &p.channel_max_abs)
    for (int c : p.outlier_channels) outlier[c] = true;
  for (int c = 0; c < n; ++c) {
    float h = a[c] / top * (size.y - 2);
    ImU32 col = outlier[c] ? IM_COL32(240, 80, 60, 255) : IM_COL32(90, 160, 230, 255);
    dl->AddRectFilled(ImVec2(o.x + c * w + 0.5f, o.y + size.y - h), ImVec2(o.x + (c + 1) * w - 0.5f, o.y + size.y), col);
    if (!b.empty()) {
      float hb = b[c] / top * (size.y - 2);
      dl->AddLine(ImVec2(o.x + c * w, o.y + size.y - hb), ImVec2(o.x + (c + 1) * w, o.y + size.y - hb),
                  IM_COL32(255, 220, 90, 255), 2.0f);
    }
  }
  if (ImGui::IsItemHovered()) {
    int c = std::clamp(static_cast<int>((ImGui::GetIO().MousePos.x - o.x) / w), 0, n - 1);
    if (b.empty()) ImGui::SetTooltip("channel %d: max |x| = %.4g", c, a[c]);
    else ImGui::SetTooltip("channel %d: max |K| = %.4g after RoPE, %.4g before", c, a[c], b[c]);
  }
}

}  // namespace

HeadDetailIntent draw_head_detail(const HeadProfile& p, bool kept_fp16, Colormap cmap, float width) {
  HeadDetailIntent intent;
  ImGui::PushID("head_detail");
  char kind = p.kind == 'k' ? 'K' : 'V';
  ImGui::Text("Layer %d, KV head %d, %c", p.layer, p.head, kind);
  ImGui::SameLine();
  if (ImGui::SmallButton(kept_fp16 ? "Quantize this head again" : "Keep this head in fp16")) intent.toggle_fp16 = true;
  ImGui::SameLine();
  if (ImGui::SmallButton("Close")) intent.close = true;

  ImGui::TextDisabled("per-channel max |%c|%s", kind, p.channel_max_abs_pre_rope.empty() ? "" : "  (bars: after RoPE, yellow: before RoPE)");
  channel_bars(p, p.channel_max_abs, p.channel_max_abs_pre_rope, ImVec2(width, 110));
  if (!p.channel_max_abs_rotated.empty()) {  // the policy's rotation: what the method actually quantizes
    ImGui::TextDisabled("per-channel max |%c| after the policy's Hadamard rotation (what is quantized; same scale as above)", kind);
    channel_bars(p, p.channel_max_abs_rotated, {}, ImVec2(width, 110));
  }

  if (p.outlier_channels.empty()) {
    ImGui::TextUnformatted("No outlier channels (none reaches 4x the median channel max).");
  } else {
    std::string s = "Outlier channels (>= 4x median):";
    for (size_t i = 0; i < p.outlier_channels.size() && i < 16; ++i) {
      int c = p.outlier_channels[i];
      char buf[48];
      std::snprintf(buf, sizeof buf, " %d (%.3g)", c, p.channel_max_abs[c]);
      s += buf;
    }
    if (p.outlier_channels.size() > 16) s += " ...";
    ImGui::TextWrapped("%s", s.c_str());
  }

  if (p.token_error.empty()) {
    ImGui::TextDisabled("per-token error: waiting for a quantization of this dump");
  } else {
    ImGui::TextDisabled("per-token relative error ||x - x^||^2 / ||x||^2 (log colour, max per column)");
    std::vector<double> binned = bin_max(p.token_error, std::max(1, static_cast<int>(width / 2)));
    ValueScale scale = fit_scale(binned, ScaleKind::Log);
    draw_strip("token_error", binned, static_cast<int>(p.token_error.size()), scale, cmap, ImVec2(width, 28), "token");
    ImGui::TextDisabled("token 0 .. %d    range %s .. %s", static_cast<int>(p.token_error.size()) - 1,
                        format_value(scale.lo).c_str(), format_value(scale.hi).c_str());
  }
  ImGui::PopID();
  return intent;
}

}  // namespace kvscope::views
