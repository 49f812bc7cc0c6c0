#include "views/jobs_view.h"

#include <cstdio>

#include <imgui.h>

namespace kvscope::views {

JobsIntent draw_jobs(const std::vector<JobRow>& jobs) {
  JobsIntent in;
  ImGui::PushID("jobs");
  if (jobs.empty()) ImGui::TextDisabled("No jobs yet. Quantizations started by the policy editor show up here.");
  for (const JobRow& j : jobs) {
    ImGui::PushID(static_cast<int>(j.id));
    static const char* kState[] = {"queued", "running", "done", "failed", "cancelled"};
    bool active = j.state == JobRow::State::Queued || j.state == JobRow::State::Running;
    char overlay[64];
    std::snprintf(overlay, sizeof overlay, "%.0f%%  %.1f s", j.progress * 100, j.elapsed_s);
    ImGui::SetNextItemWidth(220);
    ImGui::ProgressBar(static_cast<float>(j.progress), ImVec2(220, 0), overlay);
    ImGui::SameLine();
    if (j.state == JobRow::State::Failed) ImGui::PushStyleColor(ImGuiCol_Text, IM_COL32(255, 110, 90, 255));
    ImGui::Text("%-9s %s", kState[static_cast<int>(j.state)], j.name.c_str());
    if (j.state == JobRow::State::Failed) ImGui::PopStyleColor();
    if (active) {
      ImGui::SameLine();
      if (ImGui::SmallButton("Cancel")) in.cancel.push_back(j.id);
    }
    if (!j.message.empty()) {
      ImGui::SameLine();
      ImGui::TextDisabled("%s", j.message.c_str());
    }
    ImGui::PopID();
  }
  if (!jobs.empty() && ImGui::SmallButton("Clear finished")) in.clear_finished = true;
  ImGui::PopID();
  return in;
}

}  // namespace kvscope::views
