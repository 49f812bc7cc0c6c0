#!/usr/bin/env bash
# The full test run: installs what is missing, builds in Release, runs every test with the
# shared real models. This is exactly what .ci/run calls.
# Usage: scripts/test.sh   (KVSCOPE_TEST_MODELS defaults to ../shared/models next to the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
export KVSCOPE_TEST_MODELS=${KVSCOPE_TEST_MODELS:-$(cd .. && pwd)/shared/models}
export KVSCOPE_TEST_DATA=${KVSCOPE_TEST_DATA:-$(cd .. && pwd)/shared/data}
if [ ! -d "$KVSCOPE_TEST_MODELS" ]; then
  echo "test: KVSCOPE_TEST_MODELS=$KVSCOPE_TEST_MODELS does not exist; the tests need the shared models" >&2
  exit 1
fi
# The benchmarks (tests/bench, tests/storage/bench_*.cpp) are not tests: CI does not build them; the
# benchmark scripts configure them back on (-DKVSCOPE_BUILD_BENCH=ON).
KVSCOPE_CMAKE_ARGS="-DKVSCOPE_BUILD_BENCH=OFF ${KVSCOPE_CMAKE_ARGS:-}" scripts/setup.sh build
# Every input parser fuzzed briefly (libFuzzer + ASan/UBSan, its own clang build; a release run
# uses KVSCOPE_FUZZ_SECONDS=600 and a random seed). Before ctest so that ctest's summary closes the output.
KVSCOPE_FUZZ_SECONDS=${KVSCOPE_FUZZ_SECONDS:-10} KVSCOPE_FUZZ_SEED=${KVSCOPE_FUZZ_SEED-1} scripts/fuzz.sh build-fuzz
# The full suite again under ASan+UBSan (scripts/sanitize.sh: instrumented -O0/-O1 build in
# build-asan, about the CPU time of the Release build, plus ~2-4 min of tests); KVSCOPE_CI_SANITIZE=0 skips it.
if [ "${KVSCOPE_CI_SANITIZE:-1}" = 1 ]; then scripts/sanitize.sh build-asan; fi
# Sweeps through a real single-node Slurm cluster started on this machine (root; installs
# slurm-wlm + munge if missing; ~1 min): opt in with KVSCOPE_CI_SLURM=1.
if [ "${KVSCOPE_CI_SLURM:-0}" = 1 ]; then tests/slurm/run_local_slurm.sh build/app/kvscope "$KVSCOPE_TEST_MODELS" "$KVSCOPE_TEST_DATA"; fi
cd build
# The test executables side by side, one per core (each test process starts libtorch in ~1.4 s of CPU,
# so one ctest test per executable, not per file).
ctest --output-on-failure --timeout 1500 -j "$(nproc)"
