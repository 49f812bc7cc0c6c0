#!/usr/bin/env bash
# Rate-distortion of the deployment formats (docs/FORMATS.md §8): the demo dump and a
# tinystories-llama-8L dump (1024 tokens each) quantized with every format preset next to
# uniform/KIVI, and replay of every preset on tinystories-llama-8L; then `kvscope report`.
# Usage: scripts/formats_rd.sh [out-dir] (default /tmp/kvscope-formats-rd); needs build/app/kvscope.
# About 5 min on 2 cores (one sweep job).
set -euo pipefail
cd "$(dirname "$0")/.."
KV=$(pwd)/build/app/kvscope
SHARED=$(cd .. && pwd)/shared
OUT=${1:-/tmp/kvscope-formats-rd}
mkdir -p "$OUT"
cd "$OUT"
[ -f demo1024.safetensors ] || "$KV" synth --tokens 1024 -o demo1024.safetensors
[ -f stories1024.safetensors ] || "$KV" dump --model "$SHARED/models/tinystories-llama-8L" \
  --text "$SHARED/data/tinystories_validation_head.txt" --tokens 1024 --out stories1024.safetensors
presets="fp16 uniform-4 uniform-2 kivi-4 kivi-2 q8_0 q5_1 q5_0 q4_1 q4_0 iq4_nl q4_0-rot fp8-e4m3 fp8-e5m2 nvfp4
         kvquant-4 kvquant-3 kvquant-2-1% turboquant-2.5 turboquant-3.5 turboquant-prod-3.5 qjl"
methods=$(for p in $presets; do printf '{"preset": "%s"},' "$p"; done)
cat > rd.json <<JSON
{"name": "formats-rd", "dumps": ["demo1024.safetensors", "stories1024.safetensors"],
 "models": ["$SHARED/models/tinystories-llama-8L"],
 "workloads": ["text:$SHARED/data/tinystories_validation_head.txt;window=512;n=2"],
 "methods": [${methods%,}], "attn_queries": 256}
JSON
"$KV" sweep --spec rd.json --db rd.sqlite --jobs 1
"$KV" report --db rd.sqlite --out report --theme light
echo "formats_rd: tables from rd.sqlite (run_summaries, replay_metrics), figures in $OUT/report"
