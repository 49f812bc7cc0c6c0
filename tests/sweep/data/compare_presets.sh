#!/usr/bin/env bash
# Before/after check for refactors that must not change results (issue 14). Runs one kvscope on
# all_presets.json (every shipped preset, with bits and rates variants; quantize cells on a 512-token
# synthetic dump, replay cells on stories260K) and writes under OUT:
#   list.tsv           `sweep --list` (index, shard, cell hash, kind, target, policy)
#   runs.sqlite        the sweep's stored runs (compare two with `kvscope compare-cells A B`)
#   refusals.txt       the cells that refuse (replay of dump-only presets), one line each
#   quantize/<p>.json  `quantize --json` of each preset on the same dump, timing fields removed
# Usage: compare_presets.sh KVSCOPE OUT [MODELS_DIR]
#   then: diff -r OUT_before OUT_after (sqlite files differ in timestamps); and
#         kvscope compare-cells OUT_before/runs.sqlite OUT_after/runs.sqlite
set -euo pipefail
bin=$1 out=$2 models=${3:-${KVSCOPE_TEST_MODELS:-/work/shared/models}}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/quantize"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" synth --out "$work/synth512.safetensors" --tokens 512 >/dev/null
sed "s|\"stories260K\"|\"$models/stories260K\"|" "$here/all_presets.json" > "$work/spec.json"
"$bin" sweep --spec "$work/spec.json" --list --db "$out/runs.sqlite" | cut -f1-6 > "$out/list.tsv"
# Dump-only presets (ranked outlier heads, smoothing, watersic without calibration) refuse replay:
# their one-line refusals are part of the behaviour compared.
"$bin" sweep --spec "$work/spec.json" --db "$out/runs.sqlite" --jobs 1 >/dev/null 2>"$work/sweep.log" || true
grep "failed:" "$work/sweep.log" | sed "s|$work|WORK|g" > "$out/refusals.txt" || true
for f in "$here"/../../../assets/presets/*.json; do
  p=$(basename "$f" .json)
  if ! "$bin" quantize --dump "$work/synth512.safetensors" --preset "$p" --json --attn-queries 64 >"$work/q.json" 2>"$work/q.err"; then
    echo "$p: $(cat "$work/q.err")" >> "$out/quantize/refused.txt"
    continue
  fi
  python3 - "$work/q.json" "$work" > "$out/quantize/$p.json" <<'PY'
import json, sys
def strip(x):
    if isinstance(x, dict): return {k: strip(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
print(json.dumps(strip(json.load(open(sys.argv[1]))), indent=1, sort_keys=True).replace(sys.argv[2], "WORK"))
PY
done
