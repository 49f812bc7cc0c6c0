// Worker-thread defaults follow the CPUs the process may use (Slurm / taskset / cpusets), not the node.
#include <sched.h>

#include <catch2/catch.hpp>

#include "core/util/parallel.h"

using namespace kvscope;

TEST_CASE("available_cpus follows the affinity mask", "[parallel]") {
  cpu_set_t saved;
  REQUIRE(sched_getaffinity(0, sizeof(saved), &saved) == 0);
  int first = -1;
  for (int c = 0; c < CPU_SETSIZE && first < 0; ++c)
    if (CPU_ISSET(c, &saved)) first = c;
  REQUIRE(first >= 0);
  CHECK(available_cpus() == CPU_COUNT(&saved));

  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
  const int restricted = available_cpus();
  set_worker_threads(0);
  const int workers = worker_threads();
  sched_setaffinity(0, sizeof(saved), &saved);
  CHECK(restricted == 1);
  CHECK(workers == 1);
}
