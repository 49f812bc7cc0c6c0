// The Runs tab: the open store's runs (or this session's), sort, filter, tag/note, delete, open,
// export to a file or the clipboard through storage/export.h (the CLI's code).
#include <imgui.h>

#include "app/gui/shell.h"

namespace kvscope::gui {

void runs_tab(Shell& s) {
  Workspace& ws = s.ws;
  RunList& runs = ws.runs();
  views::RunsTableState& st = s.runs_state;
  std::string source = runs.has_store() ? runs.store_path() : "this session (no run store open)";
  views::RunsTableIntent in = views::draw_runs_table(runs.rows(), st, source);
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
