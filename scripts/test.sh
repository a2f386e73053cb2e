#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest). This is the README's test command and what .ci/run runs.
# Two passes: the native build (kernels for this CPU: AMX-BF16 / AVX512-BF16 where present) runs every test;
# then the portable path under AddressSanitizer + UndefinedBehaviorSanitizer: a build of the library and tests
# without -march=native, with -fsanitize=address,undefined (any report fails its test), whose oneDNN kernels are
# limited to AVX2 (ONEDNN_MAX_CPU_ISA), so every test also passes on a CPU with no AVX-512 and is memory- and
# UB-clean (bf16 tests skip there, as they say). The sanitizer pass leaves out FmnistConvNet (eight minutes
# under ASan; it trains the metric's classifier and runs in the native pass) to keep CI within its time, and
# is built without MPI (LCDKIT_MPI=OFF): the multi-process tests (a dozen lcd-train runs under mpirun) run in
# the native pass, and the sanitized one checks the build and the one-process path without MPI. A huge
# allocation returns null there, as malloc does outside the sanitizer (a fuzz finding kept as a test makes
# libhdf5 ask for 136 TB, which it handles).
# Env: LCDKIT_BUILD_DIR (default build), LCDKIT_JOBS, LCDKIT_SKIP_PORTABLE=1 (native pass only, for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
# Both builds are unity builds (LCDKIT_UNITY, see CMakeLists.txt: a third less build time; builds are most of CI's time).
scripts/setup.sh -DLCDKIT_UNITY=ON
# Test-only: headless Chromium renders the HTML report (tests/report_browser_test.sh).
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
jobs="${LCDKIT_JOBS:-$(nproc)}"
# ctest runs $jobs tests at once and each uses every core's worth of OpenMP threads, so threads outnumber cores.
# OpenMP threads that spin while they wait for a descheduled peer then burn the core the other test needs
# (AMD EPYC Zen 5, 2 cores: a trainer test took 25 s alone, 85 s beside another); passive waiting yields it.
# Measured there: native ctest 119-172 s -> 73-81 s, sanitized 444 -> 245 s. One tool run alone is as fast
# either way (bench_steps lcd-step bf16 0.156 s both), so this changes the tests' timing only, not what they check.
export OMP_WAIT_POLICY=passive
(cd "${LCDKIT_BUILD_DIR:-build}" && ctest --output-on-failure -j"$jobs")
if [ "${LCDKIT_SKIP_PORTABLE:-0}" != 1 ]; then
  portable="${LCDKIT_BUILD_DIR:-build}-portable-sanitized"
  LCDKIT_BUILD_DIR="$portable" LCDKIT_JOBS="$jobs" scripts/setup.sh -DLCDKIT_NATIVE=OFF -DLCDKIT_SANITIZE=ON \
    -DLCDKIT_UNITY=ON -DLCDKIT_BUILD_BENCH=OFF -DLCDKIT_MPI=OFF
  (cd "$portable" && ONEDNN_MAX_CPU_ISA=AVX2 ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    LSAN_OPTIONS=suppressions="$root/tests/lsan_thirdparty.supp" ctest --output-on-failure -j"$jobs" -E '^FmnistConvNet\.')
fi
