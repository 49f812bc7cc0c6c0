#include "app/gui/perf_probe.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/util/file.h"
#include "core/util/json_text.h"

namespace kvscope::gui {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(q * v.size())) - 1;
  return v[std::min(i, v.size() - 1)];
}

void PerfProbe::begin() {
  on_ = true;
  frame_ms_.clear();
  ui_ms_.clear();
  interval_ms_.clear();
  latency_ms_.clear();
  attn_latency_ms_.clear();
  first_latency_ms_.clear();
}

void PerfProbe::end(const std::string& json_path) {
  on_ = false;
  nlohmann::json j = {{"frames", frame_ms_.size()},
                      {"frame_work_ms_median", percentile(frame_ms_, 0.5)},
                      {"frame_ui_ms_median", percentile(ui_ms_, 0.5)},
                      {"frame_ui_ms_p99", percentile(ui_ms_, 0.99)},
                      {"frame_work_ms_p99", percentile(frame_ms_, 0.99)},
                      {"frame_interval_ms_median", percentile(interval_ms_, 0.5)},
                      {"frame_interval_ms_p99", percentile(interval_ms_, 0.99)},
                      {"frame_interval_ms_max", interval_ms_.empty() ? 0.0 : *std::max_element(interval_ms_.begin(), interval_ms_.end())},
                      {"first_rows_latency_ms", first_latency_ms_},
                      {"refresh_latency_ms", latency_ms_},
                      {"attention_latency_ms", attn_latency_ms_}};
  write_file_atomic(json_path, json_text(j, 2) + "\n");
}

void PerfProbe::committed(uint64_t gen) {
  commit_time_ = attn_commit_time_ = first_commit_time_ = Clock::now();
  commit_gen_ = gen;
}

void PerfProbe::first_rows(uint64_t gen) {
  if (first_commit_time_ && gen >= commit_gen_) first_frame_pending_ = true;
}

void PerfProbe::tensor_result(uint64_t gen) {
  if (commit_time_ && gen >= commit_gen_) latency_frame_pending_ = true;
}

void PerfProbe::attention_result(uint64_t gen) {
  if (attn_commit_time_ && gen >= commit_gen_) attn_latency_frame_pending_ = true;
}

void PerfProbe::frame_done(double work_ms, double ui_ms, double interval_ms) {
  if (on_) {
    frame_ms_.push_back(work_ms);
    ui_ms_.push_back(ui_ms);
    interval_ms_.push_back(interval_ms);
  }
  if ((first_frame_pending_ || latency_frame_pending_) && first_commit_time_) {  // a whole refresh counts as its first rows too
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - *first_commit_time_).count();
    if (on_) first_latency_ms_.push_back(ms);
    first_commit_time_.reset();
    first_frame_pending_ = false;
  }
  if (latency_frame_pending_ && commit_time_) {
    last_latency_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - *commit_time_).count();
    if (on_) latency_ms_.push_back(last_latency_ms_);
    commit_time_.reset();
    latency_frame_pending_ = false;
  }
  if (attn_latency_frame_pending_ && attn_commit_time_) {
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - *attn_commit_time_).count();
    if (on_) attn_latency_ms_.push_back(ms);
    attn_commit_time_.reset();
    attn_latency_frame_pending_ = false;
  }
}

}  // namespace kvscope::gui
