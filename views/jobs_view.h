#pragma once
// Jobs panel: one line per background job with a progress bar, elapsed time, state and Cancel.
#include <cstdint>
#include <string>
#include <vector>

namespace kvscope::views {

struct JobRow {
  uint64_t id = 0;
  std::string name;
  enum class State { Queued, Running, Done, Failed, Cancelled } state = State::Queued;
  double progress = 0;   // 0..1
  double elapsed_s = 0;
  std::string message;   // error text for Failed
};

struct JobsIntent {
  std::vector<uint64_t> cancel;
  bool clear_finished = false;
};

JobsIntent draw_jobs(const std::vector<JobRow>& jobs);

}  // namespace kvscope::views
