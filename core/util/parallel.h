#pragma once
// The one place core/ fans work out over the cores: [0, n) over worker_threads() threads of a
// pool made once (threads and what they hold thread_local outlive a call). Used for per-(layer,
// head) quantization and metrics.
#include <cstdint>
#include <functional>

namespace kvscope {

// CPUs this process may run on: the affinity mask (what Slurm, taskset or a container's cpuset
// allow), not every core of the node; falls back to hardware concurrency.
int available_cpus();
// Number of worker threads core/ uses (default: available_cpus()).
int worker_threads();
void set_worker_threads(int n);

// Raises the calling thread's nice value to at least n (Linux: per thread; threads it starts
// inherit it; never lowered: that needs privileges); returns the value in effect. Best effort.
int raise_thread_nice(int n);

// Calls fn(i) for every i in [0, n), spread over worker_threads(); items are claimed
// dynamically so uneven work balances. The caller works too. The first exception stops the
// hand-out of items and is rethrown on the caller's thread. A call made inside another one's items
// runs inline (the cores are busy); concurrent calls from other threads (GUI jobs) each get
// threads while the pool serves the first.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace kvscope
