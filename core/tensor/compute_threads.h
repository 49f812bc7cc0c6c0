#pragma once
// How BLAS uses the cores, set once per process before the first matrix product that matters
// (model forward, attention metrics): products run in OpenBLAS on worker_threads() threads.
// (kvscope no longer links libtorch, whose OpenMP intra-op pool had to be kept at one thread: on
// the shared 2-core machine a 2-thread pool made a 256-token prefill take 0.6-3.8 s instead of
// 0.07-0.19 s whenever another process held a core.)
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
