#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest). This is the README's test command and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd "${LCDKIT_BUILD_DIR:-build}"
ctest --output-on-failure -j"${LCDKIT_JOBS:-$(nproc)}"
