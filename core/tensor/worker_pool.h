#pragma once
// A persistent pool for the model's hand-written kernels (decode mat-vecs, attention, element-wise
// loops). parallel_for (core/util/parallel.h) starts threads per call, which costs more than a
// whole decode mat-vec of a small model; here helpers stay alive and spin briefly between calls,
// so a dispatch costs ~1 us while a decode step runs, and sleep when idle.
#include <functional>

namespace kvscope {

// Threads the model kernels use now: the OpenBLAS thread count (ScopedBlasThreads lowers both,
// so a sweep's cells run single-threaded as their GEMMs do), at most available_cpus().
int kernel_threads();

// Calls fn(part, parts) for part in [0, parts) on up to `parts` threads (the caller runs part 0)
// and returns when all are done. fn must not throw. When the pool is busy (another thread is
// dispatching) the parts run one after another on the caller: results never depend on the split.
void run_parts(int parts, const std::function<void(int part, int parts)>& fn);

// Rows [begin, end) of n items for one part of `parts`.
inline void part_range(long n, int part, int parts, long* begin, long* end) {
  *begin = n * part / parts;
  *end = n * (part + 1) / parts;
}

}  // namespace kvscope
