#!/usr/bin/env bash
# Builds kvscope with AddressSanitizer + UBSan in a separate build directory and runs the test
# suite there. Any sanitizer report fails the run (UBSan does not recover).
# What is instrumented: the libraries and the kvscope program (the code under test), at -O0 with
# the numeric core at -O1; the test code is compiled plainly and linked with the sanitizer
# runtimes (KVSCOPE_SANITIZE_TESTS=1 instruments it too, about 2x the build time).
# Usage: scripts/sanitize.sh [build-dir]          (default: build-asan)
#   KVSCOPE_SANITIZE_TESTS=1       instrument the test code too
#   KVSCOPE_SANITIZE_ONLY=regex    run only the ctest tests matching regex (e.g. "core|storage");
#                                  only their executables are built
#   KVSCOPE_SANITIZE_JOBS=N        parallel build jobs and ctest -j (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build-asan}
export KVSCOPE_TEST_MODELS=${KVSCOPE_TEST_MODELS:-$(cd .. && pwd)/shared/models}
export KVSCOPE_TEST_DATA=${KVSCOPE_TEST_DATA:-$(cd .. && pwd)/shared/data}
if [ ! -d "$KVSCOPE_TEST_MODELS" ]; then
  echo "sanitize: KVSCOPE_TEST_MODELS=$KVSCOPE_TEST_MODELS does not exist; the tests need the shared models" >&2
  exit 1
fi
JOBS=${KVSCOPE_SANITIZE_JOBS:-$(nproc)}
FILTER=${KVSCOPE_SANITIZE_ONLY:-}
INSTRUMENT_TESTS=OFF
[ "${KVSCOPE_SANITIZE_TESTS:-0}" = 1 ] && INSTRUMENT_TESTS=ON

# Instrumented -O3 -g compiles ~6x slower than plain -O3 here, -O0 about as fast: the build type is
# Release (NDEBUG, as CI tests) with -O0; -g1 gives line numbers in reports. GCC 12 with ASan
# reports false -Wmaybe-uninitialized inside <regex>/<functional>, which -Werror would fail on.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O0 -DNDEBUG" \
  -DKVSCOPE_SANITIZE=ON -DKVSCOPE_SANITIZE_TESTS=$INSTRUMENT_TESTS -DKVSCOPE_BUILD_BENCH=OFF -DKVSCOPE_TEST_OPT=-O0 \
  -DCMAKE_CXX_FLAGS="-g1 -Wno-maybe-uninitialized" >/dev/null
if [ -n "$FILTER" ]; then
  targets=(kvscope)
  for dir in core model storage views app replay faults sweep python; do
    [[ "$dir" =~ ^($FILTER)$ ]] && [ -d "tests/$dir" ] && targets+=("test_$dir")
  done
  cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"
else
  cmake --build "$BUILD_DIR" -j "$JOBS"
fi

# libtorch is not instrumented: its allocations are never freed at exit by design and its OpenMP
# runtime confuses LeakSanitizer, so leak detection is off; everything else aborts on the first report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}
# With detect_leaks=1, the embedded interpreter's process-lifetime memory is suppressed (tests/lsan.supp).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD_DIR"
if [ -n "$FILTER" ]; then
  ctest --output-on-failure --timeout 3000 -j "$JOBS" -R "^($FILTER)\$"
else
  ctest --output-on-failure --timeout 3000 -j "$JOBS"
fi
