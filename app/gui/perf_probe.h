#pragma once
// Frame-time and refresh-latency probes for `perf_begin` / `perf_end` scripts (see README.md):
// per-frame work, UI and interval times, and the time from a committed policy edit to the first
// frame that shows its first refreshed heatmap rows, its whole heatmap (tensor results) and its
// attention results. No ImGui, no window.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvscope::gui {

class PerfProbe {
 public:
  using Clock = std::chrono::steady_clock;

  void begin();                           // clears and starts recording frames
  void end(const std::string& json_path);  // stops and writes the summary (write_file_atomic)
  // Workspace events (WorkspaceHooks).
  void committed(uint64_t gen);
  void first_rows(uint64_t gen);
  void tensor_result(uint64_t gen);
  void attention_result(uint64_t gen);
  // After a frame was presented: its times; results that arrived before it count as shown.
  void frame_done(double work_ms, double ui_ms, double interval_ms);
  double last_latency_ms() const { return last_latency_ms_; }  // < 0 until the first refresh

 private:
  bool on_ = false;
  std::vector<double> frame_ms_, interval_ms_, latency_ms_, attn_latency_ms_, first_latency_ms_, ui_ms_;
  std::optional<Clock::time_point> commit_time_, attn_commit_time_, first_commit_time_;
  uint64_t commit_gen_ = 0;
  bool latency_frame_pending_ = false, attn_latency_frame_pending_ = false, first_frame_pending_ = false;
  double last_latency_ms_ = -1;
};

double percentile(std::vector<double> v, double q);  // nearest-rank; 0 for an empty list

}  // namespace kvscope::gui
