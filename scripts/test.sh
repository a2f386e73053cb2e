#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest). This is the README's test command and what .ci/run runs.
# Two passes: the native build (kernels for this CPU: AMX-BF16 / AVX512-BF16 where present), then the portable
# path, a build without -march=native whose oneDNN kernels are limited to AVX2 (ONEDNN_MAX_CPU_ISA), so every
# test also passes on a CPU with no AVX-512 at all (bf16 tests skip there, as they say).
# Env: LCDKIT_BUILD_DIR (default build), LCDKIT_JOBS, LCDKIT_SKIP_PORTABLE=1 (native pass only, for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs="${LCDKIT_JOBS:-$(nproc)}"
(cd "${LCDKIT_BUILD_DIR:-build}" && ctest --output-on-failure -j"$jobs")
if [ "${LCDKIT_SKIP_PORTABLE:-0}" != 1 ]; then
  portable="${LCDKIT_BUILD_DIR:-build}-portable"
  cmake -S . -B "$portable" -DCMAKE_BUILD_TYPE=Release -DLCDKIT_NATIVE=OFF -DLCDKIT_BUILD_BENCH=OFF > /dev/null
  cmake --build "$portable" -j"$jobs"
  (cd "$portable" && ONEDNN_MAX_CPU_ISA=AVX2 ctest --output-on-failure -j"$jobs")
fi
