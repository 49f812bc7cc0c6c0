#pragma once
// Background work for the GUI: the one place UI-side threads are started. Each job runs on its
// own thread with a cancel flag and a progress value; its result comes back as a completion
// closure that poll() runs on the UI thread. Jobs submitted to the same non-empty slot are
// latest-wins: a newer submission cancels the older one and its completion is dropped.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "views/jobs_view.h"

namespace kvscope::gui {

struct JobContext {
  std::atomic<bool> cancel{false};
  std::atomic<double> progress{0.0};
};

class JobRunner {
 public:
  // `work` runs off the UI thread and returns what to do with its result on the UI thread (may be
  // empty). Throwing kvscope::Cancelled (or anything after cancel was requested) marks the job
  // cancelled; any other exception marks it failed and queues its message for an error dialog.
  using Completion = std::function<void()>;
  using Work = std::function<Completion(JobContext&)>;

  JobRunner() = default;
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;
  ~JobRunner();  // cancels everything and joins

  uint64_t submit(std::string name, Work work, std::string slot = {});
  void cancel(uint64_t id);
  void cancel_slot(const std::string& slot);  // cancels the slot's jobs and drops their results
  // Runs finished jobs' completions (UI thread). Returns how many ran.
  int poll();
  bool busy() const;                 // any job queued or running
  std::vector<views::JobRow> rows() const;
  void clear_finished();
  std::vector<std::string> take_errors();  // failures since the last call, oldest first

 private:
  struct Job {
    uint64_t id = 0;
    std::string name, slot;
    std::shared_ptr<JobContext> ctx = std::make_shared<JobContext>();
    views::JobRow::State state = views::JobRow::State::Running;
    std::chrono::steady_clock::time_point start, end;
    std::string message;
    Completion completion;
    bool superseded = false;  // a newer job took its slot: drop the completion
    bool completion_pending = false;
    std::thread thread;
  };
  void run(Job* job, Work work);

  mutable std::mutex mu_;
  std::list<Job> jobs_;  // list: stable addresses for the worker threads
  uint64_t next_id_ = 1;
  std::vector<std::string> errors_;
};

}  // namespace kvscope::gui
