#pragma once
// The runs the GUI knows: those in the open run store (listed, loaded on demand) and, when no
// store is open, runs kept for this session only (negative ids). Feeds the runs table, the RD
// plot and the attention overlay; exports go through storage/export.h, the CLI's code.
// UI thread only (a RunStore is one SQLite connection).
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/policy/policy.h"
#include "core/quant/report.h"
#include "storage/replay_record.h"
#include "storage/run_store.h"
#include "views/runs_model.h"

namespace kvscope::gui {

class RunList {
 public:
  RunList();
  ~RunList();
  // Opens (creating if needed) the store; Error naming the file on failure.
  void open_store(const std::string& path);
  bool has_store() const { return store_ != nullptr; }
  std::string store_path() const;

  void refresh();  // re-lists the store
  // Keeps a run: in the store when one is open, else for this session. Returns its id.
  int64_t add(const QuantizeReport& report, const std::vector<std::string>& tags = {}, const std::string& note = {});
  // Stores a replay run; Error when no store is open (replays are kept only in a store, as the CLI does).
  int64_t add_replay(const ReplayRecord& record);

  const std::vector<views::RunRow>& rows() const { return rows_; }
  std::shared_ptr<const QuantizeReport> report(int64_t id);  // null when unknown
  std::shared_ptr<const StoredRun> stored_run(int64_t id);   // loaded once, kept; null when unknown
  Policy policy(int64_t id);                                 // the policy the run used; Error if unreadable
  void set_tags_and_note(int64_t id, const std::string& tags, const std::string& note);  // tags: space/comma separated
  void remove(int64_t id);  // deletes a store run (with all its rows) or forgets a session run
  // Selected runs as a table in `format` ("csv", "md", "tex", "json"): the summary table, or the
  // compare table (deltas against the first) when `compare` is set.
  std::string export_text(const std::vector<int64_t>& ids, const std::string& format, bool compare);

 private:
  StoredRun stored(int64_t id);
  void rebuild_rows();

  std::unique_ptr<RunStore> store_;
  std::vector<RunListing> listing_;
  std::map<int64_t, std::shared_ptr<const StoredRun>> cache_;  // loaded store runs and session runs
  std::vector<int64_t> session_ids_;
  int64_t next_session_id_ = -1;
  std::vector<views::RunRow> rows_;
};

views::RunRow run_row(const QuantizeReport& r, int64_t id, const std::string& created, const std::vector<std::string>& tags,
                      const std::string& note);

}  // namespace kvscope::gui
