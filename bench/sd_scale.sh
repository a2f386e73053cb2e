#!/usr/bin/env bash
# Stable Diffusion scale, end to end from files on disk (issue 18): an SD1.5-configured model with seeded
# random weights and a random rank-64 LoRA (bench_unet --config sd15 --save), then
#   1. lcm-sample: LCM 4 steps at 512², guidance 1 (one UNet evaluation a step, as LCM-LoRA samples), the
#      LoRA folded at load, one prompt embedding from --cond, decode to PNG: sampling and decode seconds
#      (load excluded) and the process's peak resident memory;
#   2. lora-merge fold of the rank-64 adapter into the UNet: seconds and peak resident memory.
# Prints the CPU first. Weights are stored as --save-dtype (f32, or f16 as SD checkpoints ship).
# Usage: bench/sd_scale.sh [THREADS=2] [PRECISION=fp32] [SAVE_DTYPE=f32] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}" precision="${2:-fp32}" dtype="${3:-f32}" build="${4:-build}"
for b in bench/bench_unet lcm-sample lora-merge; do
  [ -x "$build/$b" ] || { echo "sd_scale.sh: $build/$b is missing; build first" >&2; exit 1; }
done
dir=$(mktemp -d "${TMPDIR:-/tmp}/lcdkit_sd_scale.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $threads threads, precision $precision, weights $dtype on disk"
"$build/bench/bench_unet" --config sd15 --size 512 --batch 1 --reps 1 --no-vae --save "$dir/model" --save-dtype "$dtype" \
  --lora-rank 64 --threads "$threads" > "$dir/save.log"
peak() { awk '/Maximum resident set size/ { printf "%.2f GB", $NF * 1024 / 1e9 }' "$1"; }

/usr/bin/time -v "$build/lcm-sample" --model "$dir/model" --cond "$dir/model/cond.safetensors" \
  --lora "$dir/model/lora-r64.safetensors" --steps 4 --guidance 1 --out "$dir/out.png" --threads "$threads" \
  --precision "$precision" 2> "$dir/sample.log" > /dev/null || { cat "$dir/sample.log" >&2; exit 1; }
sampling=$(grep -o 'steps, [0-9.]* s' "$dir/sample.log" | tail -1 | awk '{ print $2 }')
total=$(grep -o 'decoded .* [0-9.]* s since' "$dir/sample.log" | awk '{ print $(NF-2) }')
echo "lcm-sample SD1.5 512², LCM 4 steps + decode, rank-64 LoRA folded: sampling $sampling s, with decode $total s (load excluded); peak resident $(peak "$dir/sample.log")"

/usr/bin/time -v "$build/lora-merge" fold --unet "$dir/model/unet" --out "$dir/folded" "$dir/model/lora-r64.safetensors" \
  --threads "$threads" 2> "$dir/fold.log" > /dev/null || { cat "$dir/fold.log" >&2; exit 1; }
wall=$(awk '/Elapsed \(wall clock\)/ { print $NF }' "$dir/fold.log")
unet_gb=$(du -b "$dir/model/unet/diffusion_pytorch_model.safetensors" | awk '{ printf "%.2f", $1 / 1e9 }')
echo "lora-merge fold, rank 64 into the SD1.5 UNet ($unet_gb GB on disk): $wall (m:ss), peak resident $(peak "$dir/fold.log")"
