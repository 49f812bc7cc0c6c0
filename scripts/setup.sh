#!/usr/bin/env bash
# Installs the Debian 12 packages kvscope needs (idempotent) and builds it in Release.
# Usage: scripts/setup.sh [build-dir]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}

PACKAGES=(
  build-essential cmake pkg-config git
  libtorch-dev libopenblas0-pthread   # OpenBLAS makes libtorch's matmul ~25x faster than the reference BLAS
  libimgui-dev libglfw3-dev libgl-dev libstb-dev fonts-dejavu-core
  libsqlitecpp-dev libsqlite3-dev sqlite3
  catch2 libbenchmark-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  xvfb xauth python3   # python3: a test reads exported CSV with the standard csv module
  # The embedded interpreter (python/): chat templates rendered with jinja2 as Transformers does,
  # policy scripts (AdaptiveQuantPolicy) whose token statistics are numpy arrays.
  python3-dev pybind11-dev python3-jinja2 python3-numpy   # numpy also: tests/core/replay/numpy_replay.py (the independent replay check)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# libtorch must resolve BLAS to OpenBLAS (pthread flavour), not the reference implementation.
if command -v update-alternatives >/dev/null; then
  alt=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/{print $2}')
  case "$alt" in *openblas*) ;; *) echo "setup: warning: libblas.so.3 points to '$alt', not OpenBLAS" >&2 ;; esac
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${KVSCOPE_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
