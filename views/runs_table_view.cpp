#include "views/runs_table_view.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <cstdio>

#include <imgui.h>
#include <imgui_stdlib.h>

#include "views/colormap.h"

namespace kvscope::views {

namespace {

void cell_number(double v, const char* fmt = "%.4g") {
  if (std::isnan(v)) ImGui::TextDisabled("-");
  else ImGui::Text(fmt, v);
}

const RunRow* find(const std::vector<RunRow>& rows, int64_t id) {
  for (const auto& r : rows)
    if (r.id == id) return &r;
  return nullptr;
}

}  // namespace

RunsTableIntent draw_runs_table(const std::vector<RunRow>& rows, RunsTableState& st, const std::string& source) {
  RunsTableIntent in;
  ImGui::PushID("runs_table");
  ImGui::TextDisabled("%s: %d runs", source.c_str(), static_cast<int>(rows.size()));
  ImGui::SameLine();
  if (ImGui::SmallButton("Refresh")) in.refresh = true;
  ImGui::SetNextItemWidth(300);
  ImGui::InputTextWithHint("##filter", "filter (words match model, method, policy, tag, note)", &st.filter);

  std::vector<int> order = filter_and_sort(rows, st.filter, st.sort, st.ascending);
  ImGuiTableFlags flags = ImGuiTableFlags_Sortable | ImGuiTableFlags_RowBg | ImGuiTableFlags_BordersInnerV |
                          ImGuiTableFlags_ScrollY | ImGuiTableFlags_Resizable;
  float table_h = std::max(120.0f, ImGui::GetContentRegionAvail().y - ImGui::GetTextLineHeightWithSpacing() * 6);
  if (ImGui::BeginTable("runs", kRunColumnCount, flags, ImVec2(0, table_h))) {
    ImGui::TableSetupScrollFreeze(0, 1);
    for (int c = 0; c < kRunColumnCount; ++c) {
      ImGuiTableColumnFlags f = c == 0 ? ImGuiTableColumnFlags_DefaultSort | ImGuiTableColumnFlags_PreferSortDescending : 0;
      ImGui::TableSetupColumn(run_column_name(static_cast<RunColumn>(c)), f, 0, c);
    }
    ImGui::TableHeadersRow();
    if (ImGuiTableSortSpecs* specs = ImGui::TableGetSortSpecs(); specs && specs->SpecsDirty) {
      if (specs->SpecsCount > 0) {
        st.sort = static_cast<RunColumn>(specs->Specs[0].ColumnUserID);
        st.ascending = specs->Specs[0].SortDirection == ImGuiSortDirection_Ascending;
      }
      specs->SpecsDirty = false;
    }
    for (int i : order) {
      const RunRow& r = rows[i];
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      bool sel = st.selected.count(r.id) > 0;
      char id[32];
      std::snprintf(id, sizeof id, "%lld", static_cast<long long>(r.id));
      if (ImGui::Selectable(id, sel, ImGuiSelectableFlags_SpanAllColumns | ImGuiSelectableFlags_AllowDoubleClick)) {
        if (!ImGui::GetIO().KeyCtrl) st.selected.clear();
        if (sel && ImGui::GetIO().KeyCtrl) st.selected.erase(r.id);
        else st.selected.insert(r.id);
        if (ImGui::IsMouseDoubleClicked(0)) in.open_run = r.id;
      }
      ImGui::TableNextColumn(); ImGui::TextUnformatted(r.created.c_str());
      ImGui::TableNextColumn(); ImGui::TextUnformatted(r.model.c_str());
      ImGui::TableNextColumn(); ImGui::TextUnformatted(r.method.c_str());
      ImGui::TableNextColumn(); ImGui::TextUnformatted(r.policy.c_str());
      ImGui::TableNextColumn(); cell_number(r.bits_per_element, "%.3f");
      ImGui::TableNextColumn(); cell_number(r.bytes_per_token, "%.0f");
      ImGui::TableNextColumn(); cell_number(r.k_nmse);
      ImGui::TableNextColumn(); cell_number(r.v_nmse);
      ImGui::TableNextColumn(); cell_number(r.attn_cos, "%.5f");
      ImGui::TableNextColumn(); cell_number(r.greedy_match, "%.3f");
      ImGui::TableNextColumn(); cell_number(r.next_token_kl);
      ImGui::TableNextColumn(); ImGui::TextUnformatted(r.tag.c_str());
    }
    ImGui::EndTable();
  }

  // Compare: the first two selected runs, b - a.
  if (st.selected.size() >= 2) {
    auto it = st.selected.begin();
    const RunRow* a = find(rows, *it);
    const RunRow* b = find(rows, *std::next(it));
    if (a && b) {
      RunDelta d = run_delta(*a, *b);
      ImGui::Text("run %lld - run %lld:  bits/elem %+.3f   B/token %+.0f   K NMSE %+.3g   V NMSE %+.3g   attn cos %+.4g",
                  static_cast<long long>(b->id), static_cast<long long>(a->id), d.bits_per_element, d.bytes_per_token,
                  d.k_nmse, d.v_nmse, d.attn_cos);
    }
  }
  if (st.selected.size() == 1) {
    if (const RunRow* r = find(rows, *st.selected.begin())) {
      if (st.editing != r->id) {
        st.editing = r->id;
        st.tag_draft = r->tag;
        st.note_draft = r->note;
      }
      std::string& tag = st.tag_draft;
      std::string& note = st.note_draft;
      ImGui::SetNextItemWidth(160);
      ImGui::InputText("tag", &tag);
      ImGui::SameLine();
      ImGui::SetNextItemWidth(360);
      ImGui::InputText("note", &note);
      ImGui::SameLine();
      if (ImGui::Button("Save tag/note")) {
        in.edit_run = r->id;
        in.new_tag = tag;
        in.new_note = note;
      }
    }
  }
  ImGui::SetNextItemWidth(110);
  ImGui::Combo("##fmt", &st.export_format, kExportFormats, 3);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(300);
  ImGui::InputTextWithHint("##export_path", "export file path", &st.export_path);
  ImGui::SameLine();
  ImGui::Checkbox("compare", &st.compare);
  ImGui::SameLine();
  ImGui::BeginDisabled(st.selected.empty());
  if (ImGui::Button("Export selected")) in.export_file = true;
  ImGui::SameLine();
  if (ImGui::Button("Copy to clipboard")) in.export_clipboard = true;
  ImGui::SameLine();
  // Deleting asks twice: the first click arms the button, the second deletes.
  if (!st.delete_armed) {
    if (ImGui::Button("Delete selected")) st.delete_armed = true;
  } else {
    if (ImGui::Button("Really delete?")) in.delete_selected = true, st.delete_armed = false;
    ImGui::SameLine();
    if (ImGui::SmallButton("keep")) st.delete_armed = false;
  }
  ImGui::EndDisabled();
  ImGui::PopID();
  return in;
}

}  // namespace kvscope::views
