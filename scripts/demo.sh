#!/usr/bin/env bash
# Installs, builds and opens the kvscope GUI on its built-in synthetic demo dump.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "demo: no display; running under Xvfb (a screenshot is the only way to see it)" >&2
  exec xvfb-run -a -s "-screen 0 1600x1000x24" build/app/kvscope "$@"
fi
exec build/app/kvscope "$@"
