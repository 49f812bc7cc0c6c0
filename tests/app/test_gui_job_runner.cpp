// The GUI job runner: completions on the polling thread, latest-wins slots, cancel, failures.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "app/gui/job_runner.h"
#include "core/quant/quantize_dump.h"

using namespace kvscope;
using namespace kvscope::gui;
using State = views::JobRow::State;

namespace {

// Polls until the runner is idle (bounded, so a hang fails instead of blocking the suite).
void drain(JobRunner& r) {
  for (int i = 0; i < 2000 && r.busy(); ++i) {
    r.poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  r.poll();
  REQUIRE(!r.busy());
}

// Waits (bounded) until a job reports it started; a job that never starts fails the test.
void wait_started(const std::atomic<bool>& started) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!started) {
    if (std::chrono::steady_clock::now() > deadline) FAIL("the job did not start within 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Work that spins until cancelled (like quantize_dump checking its cancel flag).
JobRunner::Work wait_for_cancel(std::atomic<bool>& started) {
  return [&started](JobContext& ctx) -> JobRunner::Completion {
    started = true;
    while (!ctx.cancel) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    throw Cancelled();
  };
}

}  // namespace

TEST_CASE("a job's completion runs on the thread that polls, with progress at 1") {
  JobRunner r;
  std::thread::id worker, completion;
  r.submit("work", [&](JobContext& ctx) -> JobRunner::Completion {
    worker = std::this_thread::get_id();
    ctx.progress = 0.5;
    return [&] { completion = std::this_thread::get_id(); };
  });
  drain(r);
  CHECK(completion == std::this_thread::get_id());
  CHECK(worker != std::this_thread::get_id());
  auto rows = r.rows();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].state == State::Done);
  CHECK(rows[0].progress == 1.0);
}

TEST_CASE("latest wins: a newer job in the same slot cancels the older one and drops its result") {
  JobRunner r;
  std::atomic<bool> started{false};
  int applied = 0;
  r.submit("old", [&](JobContext& ctx) -> JobRunner::Completion {
    started = true;
    // Finishes "successfully" only after being superseded: its result must still be dropped.
    while (!ctx.cancel) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return [&] { applied += 1; };
  }, "requantize");
  wait_started(started);
  r.submit("new", [&](JobContext&) -> JobRunner::Completion { return [&] { applied += 10; }; }, "requantize");
  drain(r);
  CHECK(applied == 10);
  auto rows = r.rows();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].state == State::Cancelled);
  CHECK(rows[1].state == State::Done);
  // Other slots are independent.
  int other = 0;
  r.submit("a", [&](JobContext&) -> JobRunner::Completion { return [&] { ++other; }; }, "x");
  r.submit("b", [&](JobContext&) -> JobRunner::Completion { return [&] { ++other; }; }, "y");
  drain(r);
  CHECK(other == 2);
}

TEST_CASE("cancel by id, and failures are reported once with their message") {
  JobRunner r;
  std::atomic<bool> started{false};
  uint64_t id = r.submit("long", wait_for_cancel(started));
  wait_started(started);
  r.cancel(id);
  r.submit("broken", [](JobContext&) -> JobRunner::Completion { throw std::runtime_error("dump.safetensors: truncated"); });
  drain(r);
  auto rows = r.rows();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].state == State::Cancelled);
  CHECK(rows[1].state == State::Failed);
  CHECK(rows[1].message == "dump.safetensors: truncated");
  auto errors = r.take_errors();
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == "broken: dump.safetensors: truncated");
  CHECK(r.take_errors().empty());
  r.clear_finished();
  CHECK(r.rows().empty());
}

TEST_CASE("destroying the runner cancels and joins running jobs") {
  // The runner lives and dies on a helper thread, so a destructor that hangs fails the test after
  // a deadline instead of stalling the suite. Shared state: the helper may outlive a failed test.
  struct Shared {
    std::atomic<bool> started{false}, destroyed{false};
  };
  auto shared = std::make_shared<Shared>();
  std::thread owner([shared] {
    {
      JobRunner r;
      r.submit("forever", wait_for_cancel(shared->started));
      for (int i = 0; i < 10000 && !shared->started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    shared->destroyed = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!shared->destroyed && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (!shared->destroyed) {
    owner.detach();
    FAIL("~JobRunner did not return within 20 s of cancelling its job");
  }
  owner.join();
  CHECK(shared->started);
}

TEST_CASE("cancel_slot cancels a slot's running job and drops its result") {
  JobRunner r;
  std::atomic<bool> started{false};
  int applied = 0;
  r.submit("attention", [&](JobContext& ctx) -> JobRunner::Completion {
    started = true;
    while (!ctx.cancel) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return [&] { ++applied; };
  }, "attention");
  wait_started(started);
  r.cancel_slot("attention");
  drain(r);
  CHECK(applied == 0);
}
