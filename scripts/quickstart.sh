#!/usr/bin/env bash
# The main job. Sets up and builds; until lcd-train exists it prints the tools' --help (later: the
# quickstart distillation of an LCM-LoRA from models/fmnist-ldm-v1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build_dir="${LCDKIT_BUILD_DIR:-build}"
found=0
for tool in lcd-train lcm-sample lora-merge; do
  if [ -x "$build_dir/$tool" ]; then
    "$build_dir/$tool" --help
    found=1
  fi
done
if [ "$found" -eq 0 ]; then
  echo "quickstart: lcdkit's autograd core is built; the tools (lcd-train, lcm-sample, lora-merge) are not yet."
  echo "quickstart: run the op microbenchmark with: $build_dir/bench/bench_ops"
fi
