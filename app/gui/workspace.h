#pragma once
// The GUI's data model, without ImGui: the open dump, the policy being edited, the live result
// (quantize report, dequantized cache, drilled-down head), the runs, and the background jobs that
// change them (load/synthesize/capture a dump, re-quantize, attention metrics, sweep, replay).
// The window draws it and turns clicks into calls; tests drive it directly. UI thread only:
// completions of background jobs are applied by tick().
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/gui/dump_source.h"
#include "app/gui/job_runner.h"
#include "app/gui/live_quant.h"
#include "app/gui/run_list.h"
#include "core/dump/kv_dump.h"
#include "core/metrics/head_profile.h"
#include "core/model/discovery.h"
#include "core/policy/policy.h"
#include "core/quant/quantize_dump.h"

namespace kvscope::gui {

// Hooks for the shell: recent-file lists and the latency probes. All run on the UI thread.
struct WorkspaceHooks {
  std::function<void(const std::string&)> dump_opened;   // a dump loaded from this path
  std::function<void(const std::string&)> store_opened;  // a run store opened at this path
  std::function<void(uint64_t gen)> first_rows;          // the first refreshed heatmap rows of `gen` applied
  std::function<void(uint64_t gen)> tensor_result;       // tensor metrics of policy generation `gen` applied (all rows)
  std::function<void(uint64_t gen)> attention_result;    // attention metrics of `gen` applied
  std::function<void(uint64_t gen)> committed;           // a policy edit that re-quantizes at once
};

class Workspace {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr double kDebounceSeconds = 0.25;
  static constexpr int kLiveAttnQueries = 128;  // query positions of the whole-dump path (policies not quantized per slice)
  static constexpr double kAttentionBudgetSeconds = 1.0;  // a whole attention pass aims at this (query positions adapt)

  explicit Workspace(WorkspaceHooks hooks = {});

  // Dump. Loading runs in the background ("dump" slot: the latest request wins). A file is opened
  // through DumpReader (memory-mapped, read a layer at a time); the demo and captures are in memory.
  void open_demo(int tokens);
  void open_dump(const std::string& path);
  void set_dump(std::shared_ptr<const KvDump> dump, const std::string& name);
  void set_source(std::shared_ptr<const DumpSource> dump, const std::string& name);
  // Captures a dump of `model` on `text_file` (empty: a built-in passage) cut to `tokens` tokens,
  // written to capture_dir (default: captures/ beside the default run store) and opened from there.
  void capture(const ModelEntry& model, const std::string& text_file, int tokens);
  void set_capture_dir(const std::string& dir) { capture_dir_ = dir; }
  const std::shared_ptr<const DumpSource>& dump() const { return dump_; }
  const std::string& dump_name() const { return dump_name_; }

  // Policy. Edit policy() in place, then call policy_edited: commit re-quantizes at once, a drag
  // (commit=false) after kDebounceSeconds of quiet.
  Policy& policy() { return policy_; }
  const Policy& policy() const { return policy_; }
  void policy_edited(bool commit);
  void load_preset(const std::string& name);       // errors go to errors()
  void add_override(const std::string& json);      // one override object, as the editor's "add" row gives it
  void remove_override(int index);
  void toggle_head_fp16(int layer, int head, char kind);
  // Scripted slider release: field k.bits v.bits bits group_size residual sink_tokens clip_ratio
  // outlier_ratio method. Throws Error("<where>: ...") for an unknown field or value.
  void set_field(const std::string& field, const std::string& value, const std::string& where);
  void save_policy(const std::string& path);       // status or errors()
  // A policy script (python/policy_script.h, seed 002's AdaptiveQuantPolicy): planned for the open
  // dump now, again when a dump is opened, and whenever the file changes on disk (tick() looks
  // twice a second), each time re-quantizing like a slider release. A script that fails (syntax,
  // hook error) goes to errors() and leaves the policy as it was; the watch goes on, so saving a
  // fix re-plans. workspace_script.cpp.
  void open_policy_script(const std::string& path);
  void close_policy_script() { script_path_.clear(); }
  const std::string& policy_script() const { return script_path_; }

  // Live result: the report on screen (tensor metrics first, attention metrics follow). A policy
  // that is quantized slice by slice (slice_keys) re-quantizes only the slices whose settings
  // changed, a layer at a time; the report is rebuilt as each layer arrives and the rows still
  // waiting are stale. Other policies re-run quantize_dump on the whole dump.
  const std::shared_ptr<const QuantizeReport>& report() const { return report_; }
  uint64_t policy_gen() const { return policy_gen_; }
  uint64_t report_gen() const { return report_gen_; }
  bool requantize_due() const { return requant_due_.has_value(); }
  const std::string& status() const { return live_status_; }
  // Per layer: does the row still show an older policy's (or no) value? kind 'k', 'v', or 'a' (attention).
  std::vector<bool> stale_rows(char kind) const;
  // The last incremental pass: slices re-quantized (quantize_dump's order) and (layer * kv_heads +
  // head) pairs re-measured. Empty after a whole-dump pass.
  const std::vector<size_t>& last_requantized() const { return last_slices_; }
  const std::vector<size_t>& last_remeasured() const { return last_pairs_; }
  int attention_positions() const { return attn_positions_; }  // query positions per head (0: not chosen yet)
  void set_attention_budget(double seconds) { attn_budget_s_ = seconds; }
  void set_status(std::string s) { live_status_ = std::move(s); }

  // Drill-down: one head of the dump with its dequantized values.
  void select_head(char kind, int layer, int head);
  void clear_selection();
  bool has_selection() const { return sel_layer_ >= 0; }
  char selected_kind() const { return sel_kind_; }
  int selected_layer() const { return sel_layer_; }
  int selected_head() const { return sel_head_; }
  const std::optional<HeadProfile>& profile() const { return profile_; }

  // Runs.
  RunList& runs() { return runs_; }
  const RunList& runs() const { return runs_; }
  void open_store(const std::string& path);  // throws Error
  // Shows a stored run: its report and policy. Returns true when a quantize report is on screen
  // (a replay run only loads its policy).
  bool open_run(int64_t id);
  void save_run();  // the live report, into the open store (else the default one)
  void export_runs(const std::vector<int64_t>& ids, const std::string& format, bool compare, const std::string& path);
  std::vector<int64_t>& attention_runs() { return attn_runs_; }  // runs overlaid in the attention view

  // Background work on the whole dump or a model.
  void start_sweep();  // every preset on the open dump, stored with tag "sweep"
  void replay(const ModelEntry& model, const std::string& spec);
  const std::vector<std::string>& replay_lines() const { return replay_lines_; }  // one short line per slice

  // Runs finished jobs' completions and starts a due re-quantization. Call once per frame.
  void tick();
  JobRunner& jobs() { return runner_; }
  // Nothing running or due and a result on screen (or no dump at all).
  bool idle() const;

  void error(const std::string& msg) { errors_.push_back(msg); }
  std::vector<std::string>& errors() { return errors_; }

 private:
  bool replan_script();  // true when policy_ now holds the script's plan (not yet re-quantized)
  void watch_policy_script();
  std::string script_path_;
  std::string script_stamp_;  // mtime + size of the file when last planned
  Clock::time_point script_checked_{};
  void maybe_requantize();
  void start_whole_dump_job(const Policy& p, uint64_t gen, const std::string& name);
  void start_attention_job(std::shared_ptr<const DumpSource> dump, const Policy& p, uint64_t gen, const std::string& name);
  void apply_live_updates();
  void rebuild_live_report(bool fresh_rows);
  std::string pair_key(size_t pair) const { return target_keys_[pair * 2] + "&" + target_keys_[pair * 2 + 1]; }
  void refresh_profile();

  WorkspaceHooks hooks_;
  std::shared_ptr<const DumpSource> dump_;
  std::string dump_name_;
  std::string capture_dir_;
  Policy policy_;
  uint64_t policy_gen_ = 0;
  std::optional<Clock::time_point> requant_due_;
  std::shared_ptr<const QuantizeReport> report_;
  std::shared_ptr<const DequantizedKV> deq_;
  uint64_t report_gen_ = 0;  // policy generation the report on screen was computed for
  // Incremental state (live_quant.h): cache per slice and per (layer, KV head), the keys of the
  // policy being computed, its plans, and where the background pass delivers.
  std::vector<SliceOutcome> slices_;
  std::vector<AttentionOutcome> attn_;
  std::vector<std::string> target_keys_;  // empty: the whole-dump path is on
  std::vector<HeadPlan> live_plans_;
  Policy live_policy_;
  uint64_t live_gen_ = 0, tensor_done_gen_ = 0, attn_done_gen_ = 0;
  bool first_rows_pending_ = false;
  bool whole_tensor_pending_ = false, whole_attention_pending_ = false;
  int attn_positions_ = 0;
  double attn_budget_s_ = kAttentionBudgetSeconds;
  std::vector<size_t> last_slices_, last_pairs_;
  std::shared_ptr<UpdateInbox> inbox_ = std::make_shared<UpdateInbox>();
  std::string live_status_;
  char sel_kind_ = 'k';
  int sel_layer_ = -1, sel_head_ = -1;
  std::optional<HeadProfile> profile_;
  RunList runs_;
  std::vector<int64_t> attn_runs_;
  std::vector<std::string> replay_lines_;
  std::vector<std::string> errors_;
  JobRunner runner_;  // last: destroyed first, so no job outlives the state its completion touches
};

}  // namespace kvscope::gui
