// The Runs tab: the open store's runs (or this session's), sort, filter, tag/note, delete, open,
// export to a file or the clipboard through storage/export.h (the CLI's code); below the table,
// the per-step KLD distribution (CDF, log x) of the selected replay runs, overlaid.
#include <imgui.h>

#include "app/gui/kld_cdf_data.h"
#include "app/gui/shell.h"
#include "views/kld_cdf_view.h"

namespace kvscope::gui {

// The selected runs' stored KLD quantiles (kld_cdf_data.h), reloaded only when the selection changes.
const std::vector<views::KldDistribution>& selected_kld(Shell& s) {
  const std::set<int64_t>& sel = s.runs_state.selected;
  if (sel != s.kld_ids) {
    s.kld_ids = sel;
    std::vector<StoredRun> runs;
    for (int64_t id : sel)
      if (auto r = s.ws.runs().stored_run(id); r && !r->kld_quantiles.empty()) runs.push_back(*r);
    s.kld_runs = kld_distributions(runs);
  }
  return s.kld_runs;
}

void kld_panel(Shell& s, ImVec2 size) {
  const auto& d = selected_kld(s);
  if (d.empty()) {
    ImGui::TextDisabled("Select replay runs (kvscope replay ... --store) to overlay their per-step next-token KL distributions.");
    return;
  }
  views::PlotIntent in = views::draw_kld_cdf("kld_cdf", d, size);
  if (in.clicked.valid() && in.clicked.series < static_cast<int>(d.size())) s.open_run(d[in.clicked.series].run_id);
}

void runs_tab(Shell& s) {
  Workspace& ws = s.ws;
  RunList& runs = ws.runs();
  views::RunsTableState& st = s.runs_state;
  std::string source = runs.has_store() ? runs.store_path() : "this session (no run store open)";
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float plot_h = avail.y * 0.42f;
  ImGui::BeginChild("runs_table", ImVec2(0, avail.y - plot_h - ImGui::GetStyle().ItemSpacing.y), false);
  views::RunsTableIntent in = views::draw_runs_table(runs.rows(), st, source);
  ImGui::EndChild();
  kld_panel(s, ImVec2(avail.x, plot_h));
  try {
    if (in.refresh) runs.refresh();
    if (in.edit_run) runs.set_tags_and_note(*in.edit_run, in.new_tag, in.new_note);
    if (in.delete_selected) {
      for (int64_t id : st.selected) runs.remove(id);
      ws.set_status("deleted " + std::to_string(st.selected.size()) + " run(s)");
      st.selected.clear();
    }
    if (in.open_run) s.open_run(*in.open_run);
    if (in.export_file || in.export_clipboard) {
      static const char* kFormats[] = {"csv", "md", "tex"};
      std::vector<int64_t> ids(st.selected.begin(), st.selected.end());
      if (in.export_clipboard) {
        std::string text = runs.export_text(ids, kFormats[st.export_format], st.compare);
        ImGui::SetClipboardText(text.c_str());
        ws.set_status("copied " + std::to_string(ids.size()) + " run(s) to the clipboard");
      } else {
        ws.export_runs(ids, kFormats[st.export_format], st.compare, st.export_path);
      }
    }
  } catch (const std::exception& e) {
    s.error(e.what());
  }
}

}  // namespace kvscope::gui
