#pragma once
// The one place core/ fans work out over the cores: a static split of [0, n) over
// hardware threads. Used for per-(layer, head) quantization and metrics.
#include <cstdint>
#include <functional>

namespace kvscope {

// CPUs this process may run on: the affinity mask (what Slurm, taskset or a container's cpuset
// allow), not every core of the node; falls back to hardware concurrency.
int available_cpus();
// Number of worker threads core/ uses (default: available_cpus()).
int worker_threads();
void set_worker_threads(int n);

// Calls fn(i) for every i in [0, n), spread over worker_threads(); items are claimed
// dynamically so uneven work balances. Exceptions are rethrown on the caller's thread.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace kvscope
