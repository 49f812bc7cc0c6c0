#include "core/tensor/worker_pool.h"

#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/tensor/compute_threads.h"
#include "core/util/parallel.h"

namespace kvscope {

int kernel_threads() {
  configure_compute_threads();
  using GetThreads = int (*)();
  static auto fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  static const int cpus = available_cpus();  // a system call: once (called per decode mat-vec)
  const int n = fn ? fn() : worker_threads();
  return std::clamp(n, 1, cpus);
}

namespace {

// The dispatch word: generation (24 bits) | parts (20 bits) | next unclaimed part (20 bits). A claim
// is a compare-exchange of the whole word, so a helper still holding an older generation can never
// claim a part of a newer dispatch.
constexpr int kIndexBits = 20;
constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;
constexpr int kMaxParts = static_cast<int>(kIndexMask);
uint64_t gen_of(uint64_t t) { return t >> (2 * kIndexBits); }
uint64_t parts_of(uint64_t t) { return (t >> kIndexBits) & kIndexMask; }
uint64_t next_of(uint64_t t) { return t & kIndexMask; }

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      stop_.store(true);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int parts, const std::function<void(int, int)>& fn) {
    const int threads = std::min(parts, kernel_threads());
    std::unique_lock<std::mutex> busy(dispatch_mutex_, std::try_to_lock);
    if (threads <= 1 || parts > kMaxParts || !busy.owns_lock()) {
      for (int p = 0; p < parts; ++p) fn(p, parts);
      return;
    }
    ensure_helpers(threads - 1);
    task_ = &fn;
    done_.store(0, std::memory_order_relaxed);
    generation_ = (generation_ + 1) & 0xffffff;
    const uint64_t g = generation_;
    ticket_.store((g << (2 * kIndexBits)) | (static_cast<uint64_t>(parts) << kIndexBits));  // seq_cst: pairs with sleeping_
    if (sleeping_.load() > 0) {
      { std::lock_guard<std::mutex> lock(sleep_mutex_); }
      wake_.notify_all();
    }
    claim_all(g);  // the caller works too, and alone if the helpers are slow to come
    for (int spins = 0; done_.load(std::memory_order_acquire) < parts; ++spins) {
      if (spins < 20000) _mm_pause();
      else std::this_thread::yield();
    }
  }

 private:
  void ensure_helpers(int n) {
    while (static_cast<int>(threads_.size()) < n) {
      // The generation it has "seen" is the current one: the dispatch about to start is new to it.
      const uint64_t seen = generation_;
      threads_.emplace_back([this, seen] { helper(seen); });
    }
  }

  // Claims and runs parts of generation g until none is left (or a newer dispatch began).
  void claim_all(uint64_t g) {
    uint64_t t = ticket_.load(std::memory_order_acquire);
    while (gen_of(t) == g && next_of(t) < parts_of(t)) {
      if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        (*task_)(static_cast<int>(next_of(t)), static_cast<int>(parts_of(t)));
        done_.fetch_add(1, std::memory_order_acq_rel);
        t = ticket_.load(std::memory_order_acquire);
      }
    }
  }

  void helper(uint64_t seen) {
    for (;;) {
      // Spin a little (the next mat-vec of a decode step follows within microseconds), then sleep.
      for (int spins = 0; spins < 2000 && gen_of(ticket_.load(std::memory_order_acquire)) == seen && !stop_.load(std::memory_order_relaxed); ++spins)
        _mm_pause();
      if (gen_of(ticket_.load()) == seen && !stop_.load()) {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        sleeping_.fetch_add(1);  // seq_cst, then the ticket is read: pairs with run()
        wake_.wait(lock, [&] { return stop_.load() || gen_of(ticket_.load()) != seen; });
        sleeping_.fetch_sub(1);
      }
      if (stop_.load()) return;
      seen = gen_of(ticket_.load(std::memory_order_acquire));
      claim_all(seen);
    }
  }

  std::mutex dispatch_mutex_;  // one dispatcher at a time
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  alignas(64) std::atomic<uint64_t> ticket_{0};
  alignas(64) std::atomic<int> done_{0};
  std::atomic<int> sleeping_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int, int)>* task_ = nullptr;
  uint64_t generation_ = 0;  // written by the dispatcher only
  std::vector<std::thread> threads_;
};

}  // namespace

void run_parts(int parts, const std::function<void(int, int)>& fn) {
  static Pool pool;
  pool.run(parts, fn);
}

}  // namespace kvscope
