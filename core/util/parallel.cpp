#include "core/util/parallel.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace kvscope {

static std::atomic<int> g_threads{0};

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int worker_threads() {
  int n = g_threads.load();
  if (n <= 0) n = available_cpus();
  return n;
}

void set_worker_threads(int n) { g_threads.store(n); }

namespace {

int this_thread_nice() { return getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid))); }

// Inside a parallel_for (a pool thread, or a caller while it works): nested calls run inline, the
// cores being busy already.
thread_local int t_depth = 0;

struct Depth {
  Depth() { ++t_depth; }
  ~Depth() { --t_depth; }
};

// The items of one parallel_for: claimed one at a time; the first exception stops the hand-out.
struct Items {
  const std::function<void(int64_t)>* fn = nullptr;
  int64_t n = 0;
  int nice = 0;  // the caller's: a helper runs the items at least this nice
  std::atomic<int64_t> next{0};
  std::mutex error_mu;
  std::exception_ptr error;

  void work() {
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        next.store(n);
      }
    }
  }
};

// Threads made once and kept, so what they hold thread_local (quantizer scratch, the GUI's
// attention buffers) is made once too: fresh threads per call made every buffer anew, zeroed and
// page-faulted (a GUI refresh spent ~15% of its time there). One parallel_for at a time uses the
// pool; a concurrent caller (another GUI job) gets threads of its own, as before.
class Pool {
 public:
  // Runs the items with up to `helpers` pool threads besides the caller; false if the pool is busy.
  bool run(Items& items, int helpers) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (busy_) return false;
      try {
        while (static_cast<int>(threads_.size()) < helpers) threads_.emplace_back([this] { loop(); });
      } catch (const std::system_error&) {  // no more threads: the ones there are (or the caller alone)
      }
      busy_ = true;
      items_ = &items;
      slots_ = std::min<int>(helpers, static_cast<int>(threads_.size()));
      ++gen_;
    }
    wake_.notify_all();
    {
      Depth d;
      items.work();
    }
    std::unique_lock<std::mutex> lock(mu_);
    slots_ = 0;  // a helper that has not joined yet no longer will
    idle_.wait(lock, [&] { return running_ == 0; });
    items_ = nullptr;
    busy_ = false;
    return true;
  }

 private:
  void loop() {
    Depth d;
    nice_ = this_thread_nice();  // inherited from the thread that made the pool
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return gen_ != seen && slots_ > 0; });
      seen = gen_;
      --slots_;
      ++running_;
      Items* items = items_;
      lock.unlock();
      // Work of a caller below normal priority (a GUI job) stays below it on the helpers too
      // (raised only: lowering needs privileges; the GUI's callers all share one value).
      if (items->nice > nice_) nice_ = raise_thread_nice(items->nice);
      items->work();
      lock.lock();
      if (--running_ == 0) idle_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable wake_, idle_;
  std::vector<std::thread> threads_;  // never joined: the pool lives as long as the process
  bool busy_ = false;
  uint64_t gen_ = 0;  // one per run
  int slots_ = 0;     // helpers that may still join the current run
  int running_ = 0;   // helpers inside the current run
  Items* items_ = nullptr;
  static thread_local int nice_;
};

thread_local int Pool::nice_ = 0;

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: its threads wait until the process ends
  return *p;
}

}  // namespace

int raise_thread_nice(int n) {
  const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
  if (getpriority(PRIO_PROCESS, tid) < n) setpriority(PRIO_PROCESS, tid, n);
  return getpriority(PRIO_PROCESS, tid);
}

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  const int nt = static_cast<int>(std::min<int64_t>(worker_threads(), n));
  if (nt <= 1 || t_depth > 0) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  Items items;
  items.fn = &fn;
  items.n = n;
  items.nice = this_thread_nice();
  if (!pool().run(items, nt - 1)) {  // the pool is busy with another caller: threads of our own
    std::vector<std::thread> own;
    try {
      for (int t = 1; t < nt; ++t)
        own.emplace_back([&items] {
          Depth d;
          items.work();
        });
    } catch (const std::system_error&) {  // no more threads: the ones made (and the caller) do the items
    }
    {
      Depth d;
      items.work();
    }
    for (auto& th : own) th.join();
  }
  if (items.error) std::rethrow_exception(items.error);
}

}  // namespace kvscope
