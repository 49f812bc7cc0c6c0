// parallel_for (core/util/parallel.h): every item exactly once, on the pool's threads (made once),
// nested and concurrent calls, exceptions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/util/parallel.h"

using namespace kvscope;

namespace {

// Restores the thread count a test changes.
struct Threads {
  explicit Threads(int n) : before(worker_threads()) { set_worker_threads(n); }
  ~Threads() { set_worker_threads(before); }
  int before;
};

}  // namespace

TEST_CASE("parallel_for runs every item once, on threads kept between calls", "[parallel]") {
  Threads t(3);
  for (int64_t n : {0, 1, 2, 5, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for(n, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
    for (auto& h : hits) REQUIRE(h.load() == 1);
  }
  // The same helper threads serve later calls: a thread_local object is made once per thread, so
  // 20 calls make at most one per pool thread (fresh threads per call would make 40).
  static std::atomic<int> made{0};
  struct Mark {
    Mark() { ++made; }
  };
  std::mutex mu;
  std::set<std::thread::id> ids;
  for (int call = 0; call < 20; ++call)
    parallel_for(64, [&](int64_t) {
      static thread_local Mark mark;
      (void)mark;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    });
  CHECK(ids.size() >= 2);  // the work was spread
  CHECK(made.load() <= std::max(3, available_cpus()) + 1);
}

TEST_CASE("parallel_for: nested calls run inline, concurrent callers all finish", "[parallel]") {
  Threads t(2);
  std::atomic<int64_t> sum{0};
  parallel_for(8, [&](int64_t i) { parallel_for(10, [&](int64_t j) { sum += i * 10 + j; }); });
  CHECK(sum.load() == 79 * 80 / 2);

  // Four threads at once: one gets the pool, the others threads of their own; all items run.
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 25; ++rep) parallel_for(100, [&](int64_t i) { total += i; });
    });
  for (auto& c : callers) c.join();
  CHECK(total.load() == 4 * 25 * (99 * 100 / 2));
}

TEST_CASE("parallel_for rethrows the first exception on the caller and stays usable", "[parallel]") {
  Threads t(2);
  std::atomic<int> ran{0};
  std::atomic<bool> thrown{false};
  // Items after 3 start only once item 3 is throwing and then take 1 ms each, so the other thread
  // cannot finish all of them while the thrower is descheduled (CI runs two suites on two cores).
  CHECK_THROWS_WITH(parallel_for(1000,
                                 [&](int64_t i) {
                                   ran++;
                                   if (i == 3) {
                                     thrown = true;
                                     throw std::runtime_error("item 3 failed");
                                   }
                                   if (i < 3) return;
                                   while (!thrown.load()) std::this_thread::yield();
                                   std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                 }),
                    "item 3 failed");
  CHECK(ran.load() < 100);  // the hand-out stopped
  std::atomic<int> after{0};
  parallel_for(50, [&](int64_t) { after++; });
  CHECK(after.load() == 50);
  // One thread: inline, exceptions pass through as they are.
  Threads one(1);
  CHECK_THROWS_AS(parallel_for(3, [](int64_t) { throw std::logic_error("x"); }), std::logic_error);
}

TEST_CASE("parallel_for: the pool's helpers run a lower-priority caller's items at its nice value", "[parallel]") {
  Threads t(2);
  std::atomic<int> lowest{100};
  std::thread caller([&] {
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    REQUIRE(setpriority(PRIO_PROCESS, tid, std::max(1, getpriority(PRIO_PROCESS, tid))) == 0);
    const int mine = getpriority(PRIO_PROCESS, tid);
    parallel_for(64, [&](int64_t) {
      const int n = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid))) - mine;
      int cur = lowest.load();
      while (n < cur && !lowest.compare_exchange_weak(cur, n)) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    });
  });
  caller.join();
  CHECK(lowest.load() >= 0);  // no item ran above the caller's priority
}
