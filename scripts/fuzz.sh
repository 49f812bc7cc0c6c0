#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang, ASan+UBSan, parser sources only: no libtorch)
# and runs each for a fixed time. Any crash, sanitizer report, leak, timeout or non-kvscope::Error
# exception fails the run; the input is kept in <build-dir>/crashes/.
# Usage: scripts/fuzz.sh [build-dir]                      (default: build-fuzz)
#   KVSCOPE_FUZZ_SECONDS=20     time per target (CI); a release run uses 600 (10 minutes each)
#   KVSCOPE_FUZZ_TARGETS="safetensors dump"   run a subset (names without the fuzz_ prefix)
#   KVSCOPE_SHARED=../shared    where the real models are (seed corpora are cut from them)
#   KVSCOPE_FUZZ_SEED=1         libFuzzer's random seed; unset = a new one each run. The CI run fixes it so
#                               that its verdict repeats: a short run must not fail one day on a
#                               finding it missed the day before; long runs look for new inputs.
# The corpora grow in <build-dir>/corpus/<target> and are reused by the next run in that directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build-fuzz}
SECONDS_EACH=${KVSCOPE_FUZZ_SECONDS:-20}
SHARED=${KVSCOPE_SHARED:-$(cd .. && pwd)/shared}
ALL="safetensors dump config checkpoint_index hf_tokenizer sentencepiece llama2c_vocab policy run_store export workload"
TARGETS=${KVSCOPE_FUZZ_TARGETS:-$ALL}

if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz: installing clang and its libFuzzer runtime" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang libclang-rt-14-dev
fi

CC=clang CXX=clang++ cmake -S tests/fuzz -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
build_targets=(make_seeds)
for t in $TARGETS; do build_targets+=("fuzz_$t"); done
cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${build_targets[@]}"

# Seed corpora: hand-made valid files, the committed seeds, and cuts of the real shared files.
SEEDS="$BUILD_DIR/seeds"
rm -rf "$SEEDS"
"$BUILD_DIR/make_seeds" "$SEEDS"
if [ -d "$SHARED/models" ]; then
  python3 tests/fuzz/make_corpus.py "$SHARED" . "$SEEDS"
else
  echo "fuzz: warning: $SHARED/models not found; fuzzing from the hand-made seeds only" >&2
fi
[ -d tests/fuzz/seeds ] && cp -r tests/fuzz/seeds/. "$SEEDS/"
mkdir -p "$BUILD_DIR/crashes" "$BUILD_DIR/logs"

declare -A MAX_LEN=([safetensors]=32768 [dump]=32768 [sentencepiece]=16384 [llama2c_vocab]=16384
                    [run_store]=131072 [export]=131072 [workload]=8192 [config]=4096 [checkpoint_index]=4096 [hf_tokenizer]=8192 [policy]=4096)
declare -A DICT=([config]=json [checkpoint_index]=json [hf_tokenizer]=json [policy]=json [safetensors]=json [dump]=json
                 [workload]=workload)

# One target: the regression inputs, then the time-boxed run. Writes <log>.status (exit status, or
# "regression") for the summary below.
fuzz_one() {
  local t=$1 corpus="$BUILD_DIR/corpus/$1" log="$BUILD_DIR/logs/$1.log" status=0
  mkdir -p "$corpus" "$SEEDS/$t"
  local args=(-max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$t]:-8192}" -timeout=10 -rss_limit_mb=2048
              -print_final_stats=1 -artifact_prefix="$BUILD_DIR/crashes/$t-")
  [ -n "${KVSCOPE_FUZZ_SEED:-}" ] && args+=(-seed="$KVSCOPE_FUZZ_SEED")
  [ -n "${DICT[$t]:-}" ] && args+=(-dict="tests/fuzz/${DICT[$t]}.dict")
  # Inputs that once crashed (tests/fuzz/regressions/<target>-*) must stay fixed.
  local regressions=(tests/fuzz/regressions/"$t"-*)
  if [ -e "${regressions[0]}" ] && ! "$BUILD_DIR/fuzz_$t" "${regressions[@]}" >"$log.regressions" 2>&1; then
    echo regression >"$log.status"; return
  fi
  "$BUILD_DIR/fuzz_$t" "${args[@]}" "$corpus" "$SEEDS/$t" >"$log" 2>&1 || status=$?
  echo "$status" >"$log.status"
}

# Each libFuzzer run is single-threaded: KVSCOPE_FUZZ_JOBS (default: the number of cores) run at once,
# each for its full time.
JOBS=${KVSCOPE_FUZZ_JOBS:-$(nproc)}
rm -f "$BUILD_DIR"/logs/*.status
for t in $TARGETS; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  fuzz_one "$t" &
done
wait

failed=()
printf '%-18s %10s %8s %8s %6s %s\n' target execs exec/s cov ft corpus >&2
for t in $TARGETS; do
  log="$BUILD_DIR/logs/$t.log"
  status=$(cat "$log.status" 2>/dev/null || echo "no status")
  if [ "$status" = regression ]; then
    failed+=("$t"); echo "fuzz: fuzz_$t crashes on a regression input again; log: $log.regressions" >&2; continue
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
  units=$(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  printf '%-18s %10s %8s %8s %6s %s\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${units:-?}" >&2
  if [ "$status" != 0 ]; then
    failed+=("$t")
    echo "fuzz: fuzz_$t failed (exit $status); log: $log" >&2
    grep -E 'ERROR|runtime error|deadly signal|uncaught|Test unit written' "$log" | head -5 >&2 || true
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (crashing inputs in $BUILD_DIR/crashes/)" >&2
  exit 1
fi
echo "fuzz: all targets ran ${SECONDS_EACH}s without a finding" >&2
