#!/bin/sh
# Forward-speed benchmark, ratios from one run (not part of the test suite):
#   tinystories-llama-8L: prefill % of sgemm; decode tok/s vs llama2.c run.c with OpenMP on the
#   same weights (run.c built twice: -O3 -fopenmp, and -Ofast -march=native -fopenmp as its README
#   suggests); decode vs the memory-read bound.
#   A Qwen2.5-0.5B-shaped checkpoint (QWEN05_DIR, written by ../shared/tools/make_shape_model.py):
#   prefill of 2,048 tokens % of sgemm, decode vs the memory-read bound.
# Usage: scripts/bench_forward.sh [BUILD_DIR]   (env: SHARED=../shared OUT=/work/tmp-models/bench QWEN05_DIR=...)
# Outputs (run.c binaries, converted weights) go to $OUT, never into the repo.
set -eu
BUILD=${1:-build}
SHARED=${SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
OUT=${OUT:-/work/tmp-models/bench}
mkdir -p "$OUT"
# scripts/test.sh leaves the benchmarks out of build/: configure them back on and build this one.
cmake -S "$(dirname "$0")/.." -B "$BUILD" -DKVSCOPE_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD" --target bench_forward
RUNC="$SHARED/anchors/llama2c/run.c"
gcc -O3 -fopenmp "$RUNC" -lm -o "$OUT/run_omp_O3"
gcc -Ofast -march=native -fopenmp "$RUNC" -lm -o "$OUT/run_omp_Ofast"
[ -f "$OUT/llama8L.bin" ] || /usr/bin/python3 "$SHARED/anchors/llama2c/hf_to_llama2c.py" "$SHARED/models/tinystories-llama-8L" "$OUT/llama8L.bin"
TOK="$SHARED/models/llama2-tokenizer-32k/tokenizer.bin"
M8="$SHARED/models/tinystories-llama-8L"
"$BUILD/tests/bench/bench_forward" "$M8" --prefill 1024 --decode 256 --runc "$OUT/run_omp_O3" --runc-model "$OUT/llama8L.bin" --tokenizer "$TOK"
echo "(same, against run.c -Ofast -march=native:)"
"$BUILD/tests/bench/bench_forward" "$M8" --prefill 0 --decode 256 --runc "$OUT/run_omp_Ofast" --runc-model "$OUT/llama8L.bin" --tokenizer "$TOK"
if [ -n "${QWEN05_DIR:-}" ]; then
  "$BUILD/tests/bench/bench_forward" "$QWEN05_DIR" --prefill 2048 --decode 128
fi
