#!/usr/bin/env bash
# Installs the Debian packages lcdkit needs (idempotently), then configures and builds into build/.
# Usage: scripts/setup.sh [extra cmake -D options...]   Env: LCDKIT_BUILD_DIR (default build), LCDKIT_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake make ninja-build pkg-config libeigen3-dev libhdf5-dev nlohmann-json3-dev libpng-dev zlib1g-dev
          libgtest-dev libgmock-dev libbenchmark-dev libdnnl-dev dataset-fashion-mnist
          libopenmpi-dev openmpi-bin help2man)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build_dir="${LCDKIT_BUILD_DIR:-build}"
# Ninja for a new build folder: it compiles any target's files while others link, which keeps both cores busy
# in unity builds (scripts/test.sh); a folder configured before keeps its generator.
generator=()
[ -f "$build_dir/CMakeCache.txt" ] || generator=(-G Ninja)
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" -j"${LCDKIT_JOBS:-$(nproc)}"
