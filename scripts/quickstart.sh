#!/usr/bin/env bash
# The main job: installs, builds, distills an LCM-LoRA from the shipped teacher (models/fmnist-ldm-v1) for a
# time-boxed run (configs/quickstart.json: about 11 minutes of training on 2 cores; rerunning continues the
# same run), then writes a grid comparing the teacher at 50 DDIM steps with LCM at 1, 2 and 4 steps, a
# quality table, and an HTML report: runs/quickstart/report.html.
# Env: LCDKIT_THREADS (default: all cores), LCDKIT_BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build="${LCDKIT_BUILD_DIR:-build}"
threads="${LCDKIT_THREADS:-$(nproc)}"
run=runs/quickstart
model=models/fmnist-ldm-v1
t0=$(date +%s)

if [ -d "$run/checkpoints" ] && ls "$run"/checkpoints/checkpoint-*.h5 >/dev/null 2>&1; then
  "$build/lcd-train" configs/quickstart.json --resume "$run" --threads "$threads"
else
  "$build/lcd-train" configs/quickstart.json --threads "$threads"
fi
t1=$(date +%s)

adapter="$run/adapter/pytorch_lora_weights.safetensors"
grids="$run/grids"
mkdir -p "$grids"
sample() { "$build/lcm-sample" --model "$model" --labels all --seed 7 --threads "$threads" "$@"; }
sample --sampler ddim --steps 50 --guidance 3 --out "$grids/teacher-ddim50.png"
for n in 1 2 4; do sample --lora "$adapter" --sampler lcm --steps "$n" --out "$grids/lcm$n.png"; done
t2=$(date +%s)

"$build/bench/quality" --model "$model" --lora "$adapter" --per-label 30 --threads "$threads" \
  --eval ddim:50:3,ddim:4:3,dpmpp-2m:4:3,lcm:1,lcm:2,lcm:4 | tee "$run/quality.txt"
t3=$(date +%s)

{
  echo "threads: $threads"
  echo "distillation (incl. latent cache on first run): $((t1 - t0)) s"
  echo "comparison grids: $((t2 - t1)) s"
  echo "quality table: $((t3 - t2)) s"
  grep -o '"step_time":[0-9.]*' "$run/metrics.jsonl" | cut -d: -f2 | sort -n |
    awk '{ a[NR] = $1 } END { if (NR) printf "median training step: %.2f s over %d steps\n", a[int((NR + 1) / 2)], NR }'
} > "$run/timings.txt"
"$build/bench/report" --run "$run" --grid "teacher DDIM 50 steps, CFG 3=$grids/teacher-ddim50.png" \
  --grid "LCM-LoRA 1 step=$grids/lcm1.png" --grid "LCM-LoRA 2 steps=$grids/lcm2.png" \
  --grid "LCM-LoRA 4 steps=$grids/lcm4.png" --quality "$run/quality.txt" --timings "$run/timings.txt"
echo "quickstart: open $run/report.html (comparison grid: $run/comparison.png)"
