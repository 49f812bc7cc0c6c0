#pragma once
// A persistent pool for the model's hand-written kernels (decode mat-vecs, attention, element-wise
// loops). parallel_for (core/util/parallel.h) keeps its threads too, but they sleep on a condition
// variable between calls, and waking them costs more than a whole decode mat-vec of a small model;
// here helpers spin briefly between calls, and sleep when idle.
// Parts are claimed, not assigned: the caller and the helpers take the next unclaimed part until
// none is left, so a helper that is descheduled (a busy machine) or still waking up costs nothing:
// the caller runs its parts. Callers split work into more parts than threads (a few per thread
// and at most ~64 per call: a claim is one atomic operation on a shared cache line).
#include <functional>

namespace kvscope {

// Threads the model kernels use now: the OpenBLAS thread count (ScopedBlasThreads lowers both,
// so a sweep's cells run single-threaded as their GEMMs do), at most available_cpus().
int kernel_threads();

// Calls fn(part, parts) once for each part in [0, parts) on up to kernel_threads() threads (the
// caller is one) and returns when all are done. fn must not throw. When the pool is busy (another
// thread is dispatching) the parts run one after another on the caller. Results must not depend
// on which thread runs a part (they do not when each part writes its own outputs).
void run_parts(int parts, const std::function<void(int part, int parts)>& fn);

// Rows [begin, end) of n items for one part of `parts`.
inline void part_range(long n, int part, int parts, long* begin, long* end) {
  *begin = n * part / parts;
  *end = n * (part + 1) / parts;
}

}  // namespace kvscope
