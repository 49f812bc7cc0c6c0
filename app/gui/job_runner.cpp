#include "app/gui/job_runner.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "core/util/cancelled.h"
#include "core/util/parallel.h"

namespace kvscope::gui {

using State = views::JobRow::State;

JobRunner::~JobRunner() {
  {
    std::lock_guard lock(mu_);
    for (auto& j : jobs_) j.ctx->cancel = true;
  }
  for (auto& j : jobs_)
    if (j.thread.joinable()) j.thread.join();
}

uint64_t JobRunner::submit(std::string name, Work work, std::string slot) {
  std::lock_guard lock(mu_);
  if (!slot.empty())
    for (auto& j : jobs_)
      if (j.slot == slot && !j.superseded) {
        j.superseded = true;
        j.ctx->cancel = true;
      }
  Job& job = jobs_.emplace_back();
  job.id = next_id_++;
  job.name = std::move(name);
  job.slot = std::move(slot);
  job.start = std::chrono::steady_clock::now();
  job.thread = std::thread([this, p = &job, w = std::move(work)]() mutable { run(p, std::move(w)); });
  return job.id;
}

namespace {

// Jobs run below the UI thread's priority (nice +8 by default, KVSCOPE_JOB_NICE to change it;
// on Linux it applies to the calling thread only, and the threads a job starts inherit it): on a
// machine whose cores the workers fill, a frame then rarely waits for its share of CPU. Best effort:
// a failure leaves the priority as it was.
void below_ui_priority() {
  static const int nice = [] {
    const char* e = std::getenv("KVSCOPE_JOB_NICE");
    return e ? std::clamp(std::atoi(e), 0, 19) : 8;
  }();
  raise_thread_nice(nice);
}

}  // namespace

void JobRunner::run(Job* job, Work work) {
  below_ui_priority();
  Completion done;
  State state = State::Done;
  std::string message;
  try {
    done = work(*job->ctx);
    if (job->ctx->cancel) state = State::Cancelled;
  } catch (const Cancelled&) {
    state = State::Cancelled;
  } catch (const std::exception& e) {
    if (job->ctx->cancel) {
      state = State::Cancelled;
    } else {
      state = State::Failed;
      message = e.what();
    }
  }
  std::lock_guard lock(mu_);
  job->state = state;
  job->message = message;
  job->end = std::chrono::steady_clock::now();
  if (state == State::Done) job->ctx->progress = 1.0;
  if (state == State::Failed) errors_.push_back(job->name + ": " + message);
  if (state == State::Done && done && !job->superseded) {
    job->completion = std::move(done);
    job->completion_pending = true;
  }
}

void JobRunner::cancel(uint64_t id) {
  std::lock_guard lock(mu_);
  for (auto& j : jobs_)
    if (j.id == id) j.ctx->cancel = true;
}

void JobRunner::cancel_slot(const std::string& slot) {
  std::lock_guard lock(mu_);
  for (auto& j : jobs_)
    if (j.slot == slot && !j.superseded) {
      j.superseded = true;
      j.ctx->cancel = true;
    }
}

int JobRunner::poll() {
  std::vector<Completion> ready;
  {
    std::lock_guard lock(mu_);
    for (auto& j : jobs_) {
      if (j.state != State::Running && j.thread.joinable()) j.thread.join();  // finished: reap
      if (j.completion_pending) {
        j.completion_pending = false;
        if (!j.superseded) ready.push_back(std::move(j.completion));
        j.completion = nullptr;
      }
    }
    // Keep the panel short: forget the oldest finished jobs beyond a dozen.
    int finished = 0;
    for (const auto& j : jobs_) finished += j.state != State::Running && !j.completion_pending;
    for (auto it = jobs_.begin(); it != jobs_.end() && finished > 12;) {
      if (it->state != State::Running && !it->completion_pending && !it->thread.joinable()) {
        it = jobs_.erase(it);
        --finished;
      } else {
        ++it;
      }
    }
  }
  for (auto& c : ready) c();  // outside the lock: completions may submit new jobs
  return static_cast<int>(ready.size());
}

bool JobRunner::busy() const {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_)
    if (j.state == State::Running || j.completion_pending) return true;
  return false;
}

std::vector<views::JobRow> JobRunner::rows() const {
  std::lock_guard lock(mu_);
  std::vector<views::JobRow> out;
  auto now = std::chrono::steady_clock::now();
  for (const auto& j : jobs_) {
    views::JobRow r;
    r.id = j.id;
    r.name = j.name;
    r.state = j.state;
    r.progress = j.ctx->progress.load();
    auto end = j.state == State::Running ? now : j.end;
    r.elapsed_s = std::chrono::duration<double>(end - j.start).count();
    r.message = j.superseded && j.state == State::Cancelled ? "superseded by a newer request" : j.message;
    out.push_back(std::move(r));
  }
  return out;
}

void JobRunner::clear_finished() {
  std::lock_guard lock(mu_);
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->state != State::Running && !it->completion_pending) {
      if (it->thread.joinable()) it->thread.join();
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<std::string> JobRunner::take_errors() {
  std::lock_guard lock(mu_);
  return std::exchange(errors_, {});
}

}  // namespace kvscope::gui
