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
scripts/setup.sh build
cd build
ctest --output-on-failure --timeout 1500
