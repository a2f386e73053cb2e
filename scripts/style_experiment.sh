#!/usr/bin/env bash
# Issue 9's experiment: an LCM-LoRA composed with a style LoRA, no further training (θ' = θ + λ_style·τ_style
# + λ_LCM·τ_LCM). Trains what is missing (the inverted-Fashion-MNIST style adapter, configs/fmnist-style-lora.json,
# about 15-30 minutes on 2 cores; the LCM-LoRA, configs/fmnist-lcm-lora.json, about 45 minutes; interrupted
# runs are resumed), then measures every row with bench/quality against the inverted test set: FID, class
# accuracy and the style score (bench/metrics/style_metric.h), and writes one PNG grid per row.
#   rows: the autoencoder's ceiling (restyled test images encoded and decoded); the teacher and the style adapter alone with DDIM 50 (and 4) steps and CFG; the LCM-LoRA alone at 4
#   steps; `lora-merge combine` of both for each (λ_style, λ_LCM) of the grid at 1, 2 and 4 LCM steps; and
#   `lora-merge fold` of both at λ = (1, 1), which must match combine.
# Output: runs/style-experiment/table.txt, table.md (with links) and grids/<row>-<sampler>-<steps>.png.
# Env: LCDKIT_THREADS (default: all cores), LCDKIT_BUILD_DIR (build), PER_CLASS (samples per class, 100),
#      LAMBDA_STYLE ("0.6 0.8 1.0 1.2"), LAMBDA_LCM ("0.6 0.8 1.0").
set -euo pipefail
cd "$(dirname "$0")/.."
build="${LCDKIT_BUILD_DIR:-build}"
[ -x "$build/bench/quality" ] && [ -x "$build/lcd-train" ] || scripts/setup.sh
threads="${LCDKIT_THREADS:-$(nproc)}"
per_class="${PER_CLASS:-100}"
lambda_style="${LAMBDA_STYLE:-0.6 0.8 1.0 1.2}"
lambda_lcm="${LAMBDA_LCM:-0.6 0.8 1.0}"
model=models/fmnist-ldm-v1
out=runs/style-experiment
guidance=3   # the teacher's CFG scale, the one the LCM-LoRA was distilled with
mkdir -p "$out/grids" "$out/adapters"

train() {  # train CONFIG RUN_DIR: trains, or resumes an interrupted run, unless its adapter exists
  local config=$1 run=$2
  [ -f "$run/adapter/pytorch_lora_weights.safetensors" ] && return
  if ls "$run"/checkpoints/checkpoint-*.h5 >/dev/null 2>&1; then
    "$build/lcd-train" "$config" --resume "$run" --threads "$threads"
  else
    "$build/lcd-train" "$config" --threads "$threads"
  fi
}
train configs/fmnist-style-lora.json runs/fmnist-style-lora
train configs/fmnist-lcm-lora.json runs/fmnist-lcm-lora
style=runs/fmnist-style-lora/adapter/pytorch_lora_weights.safetensors
lcm=runs/fmnist-lcm-lora/adapter/pytorch_lora_weights.safetensors

table="$out/table.txt"
printf "%-34s %-9s %5s %8s %10s %8s %9s\n" "row" "sampler" "steps" "FID" "class acc" "style" "seconds" > "$table"
measure() {  # measure LABEL EVALS [quality flags...]: appends LABEL's rows to the table, grids to grids/
  local label=$1 evals=$2
  shift 2
  local dir="$out/grids/.$label"
  rm -rf "$dir"
  "$build/bench/quality" --model "$model" --style invert --per-label "$per_class" --threads "$threads" \
    --guidance "$guidance" --eval "$evals" --grid-dir "$dir" "$@" > "$out/quality-$label.txt"
  # quality's rows: sampler steps guidance FID acc% style% seconds
  awk -v label="$label" '$1 ~ /^(ddim|dpmpp-2m|lcm|vae)$/ && NF == 7 {
        printf "%-34s %-9s %5s %8s %10s %8s %9s\n", label, $1, $2, $4, $5, $6, $7 }' "$out/quality-$label.txt" | tee -a "$table"
  for f in "$dir"/*.png; do mv "$f" "$out/grids/$label-$(basename "$f")"; done
  rmdir "$dir"
}

measure autoencoder-ceiling "vae:0"   # restyled test images encoded and decoded: the best any latent model can do
measure teacher "ddim:50:$guidance"
measure style-lora "ddim:50:$guidance,ddim:4:$guidance" --teacher-lora "$style"
measure lcm-lora "lcm:4" --lora "$lcm"
for ls in $lambda_style; do
  for ll in $lambda_lcm; do
    combined="$out/adapters/combine-style$ls-lcm$ll.safetensors"
    "$build/lora-merge" combine "$combined" "$style:$ls" "$lcm:$ll" > /dev/null
    measure "combine-style$ls-lcm$ll" "lcm:1,lcm:2,lcm:4" --lora "$combined"
  done
done
rm -rf "$out/folded"
"$build/lora-merge" fold --unet "$model/unet" --out "$out/folded" "$style:1" "$lcm:1" > /dev/null
measure "fold-style1-lcm1" "lcm:1,lcm:2,lcm:4" --unet "$out/folded"
# The same table in markdown, each row linking its grid (grids/ beside table.md).
awk 'NR == 1 { print "| row | sampler | steps | FID | class acc | style | seconds | grid |"
               print "|---|---|---:|---:|---:|---:|---:|---|"; next }
     { printf "| %s | %s | %s | %s | %s | %s | %s | [%s-%s-%s.png](grids/%s-%s-%s.png) |\n", $1, $2, $3, $4, $5, $6, $7,
              $1, $2, $3, $1, $2, $3 }' "$table" > "$out/table.md"
echo
echo "style-experiment: table in $table (and table.md), grids in $out/grids/"
cat "$table"
