#pragma once
// Runs table: sortable columns, filter box, multi-select with deltas between two runs, tag/note
// editing and export of the selected runs. Draws RunRow values; the filter/sort/selection state
// is the caller's (RunsTableState).
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "views/runs_model.h"

namespace kvscope::views {

struct RunsTableState {
  std::string filter;
  RunColumn sort = RunColumn::Id;
  bool ascending = false;
  std::set<int64_t> selected;
  bool delete_armed = false;  // "Delete selected" clicked once; the next click confirms
  std::string export_path;
  int export_format = 0;  // index into kExportFormats
  bool compare = false;   // export the compare table (deltas against the first run)
  std::optional<int64_t> editing;  // run whose tag/note drafts are below
  std::string tag_draft, note_draft;
};

inline constexpr const char* kExportFormats[] = {"csv", "markdown", "latex"};

struct RunsTableIntent {
  std::optional<int64_t> open_run;  // double-click
  bool export_file = false, export_clipboard = false;
  bool delete_selected = false;  // confirmed in the view (second click)
  std::optional<int64_t> edit_run;  // the tag/note of this run was edited
  std::string new_tag, new_note;
  bool refresh = false;
};

RunsTableIntent draw_runs_table(const std::vector<RunRow>& rows, RunsTableState& state, const std::string& source);

}  // namespace kvscope::views
