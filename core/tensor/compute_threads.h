#pragma once
// How libtorch and BLAS use the cores, set once per process before the first tensor op that
// matters (model forward, attention metrics): matrix products run in OpenBLAS on
// worker_threads() threads, ATen's own OpenMP intra-op pool stays at one thread. Measured on the
// shared 2-core machine (bench_model): with a 2-thread OpenMP pool a 256-token prefill took
// 0.6-3.8 s instead of 0.07-0.19 s whenever another process held a core, because every small
// elementwise op ends in an OpenMP barrier that waits for a descheduled thread.
namespace kvscope {

void configure_compute_threads();

// OpenBLAS's thread count for the lifetime of the guard (process-wide), back to what it was
// after. Code that already runs one GEMM per worker thread wants 1: nested BLAS threads only
// contend (and spin) with the workers. Sweeps hold 1 for their whole run: OpenBLAS's results
// depend (in the last bits) on its thread count, and a cell's numbers must not depend on --jobs.
class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int n);
  ~ScopedBlasThreads();
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

 private:
  int previous_;
};

}  // namespace kvscope
