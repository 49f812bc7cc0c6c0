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
  const int n = fn ? fn() : worker_threads();
  return std::clamp(n, 1, available_cpus());
}

namespace {

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int parts, const std::function<void(int, int)>& fn) {
    std::unique_lock<std::mutex> busy(dispatch_mutex_, std::try_to_lock);
    if (parts <= 1 || !busy.owns_lock()) {
      for (int p = 0; p < parts; ++p) fn(p, parts);
      return;
    }
    ensure_helpers(parts - 1);
    task_ = &fn;
    parts_ = parts;
    remaining_.store(parts - 1);
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      generation_.fetch_add(1);
    }
    if (sleeping_.load() > 0) wake_.notify_all();
    fn(0, parts);
    for (int spins = 0; remaining_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 20000) _mm_pause();
      else std::this_thread::yield();
    }
  }

 private:
  void ensure_helpers(int n) {
    while (static_cast<int>(threads_.size()) < n) {
      const int index = static_cast<int>(threads_.size()) + 1;
      // The generation it has "seen" is the current one: the dispatch about to start is new to it
      // even if the thread only starts running after the increment.
      const uint64_t seen = generation_.load();
      threads_.emplace_back([this, index, seen] { helper(index, seen); });
    }
  }

  void helper(int index, uint64_t seen) {
    for (;;) {
      // Spin a little (the next mat-vec of a decode step follows within microseconds), then sleep.
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen && spins < 2000) {
        _mm_pause();
        ++spins;
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        sleeping_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        sleeping_.fetch_sub(1);
      }
      seen = generation_.load();
      if (stop_) return;
      if (index < parts_) {
        (*task_)(index, parts_);
        remaining_.fetch_sub(1, std::memory_order_release);
      }
    }
  }

  std::mutex dispatch_mutex_;  // one dispatcher at a time
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> remaining_{0};
  std::atomic<int> sleeping_{0};
  const std::function<void(int, int)>* task_ = nullptr;
  int parts_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

void run_parts(int parts, const std::function<void(int, int)>& fn) {
  static Pool pool;
  pool.run(parts, fn);
}

}  // namespace kvscope
