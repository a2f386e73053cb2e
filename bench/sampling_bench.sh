#!/usr/bin/env bash
# Times lcm-sample on 64 samples of fmnist-ldm-v1 including decoding: LCM 1, 2, 4 steps (guidance off) and
# DDIM 50 steps with CFG (s = 2, so 100 UNet evaluations per sample). Each row is the best of REPS runs.
# Usage: bench/sampling_bench.sh [BUILD_DIR=build] [THREADS=2] [REPS=3] [LORA_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}" threads="${2:-2}" reps="${3:-3}" lora="${4:-}"
model=models/fmnist-ldm-v1
labels=$(for i in $(seq 0 63); do printf "%d," $((i % 10)); done)
labels=${labels%,}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lora_flag=()
[ -n "$lora" ] && lora_flag=(--lora "$lora")

time_run() {  # prints the best wall time of $reps runs of lcm-sample with the given flags
  local best=""
  for _ in $(seq "$reps"); do
    local t0 t1
    t0=$(date +%s.%N)
    "$build/lcm-sample" --model "$model" "${lora_flag[@]}" --labels "$labels" --threads "$threads" --seed 1 \
      --out "$out/grid.png" "$@" 2>/dev/null
    t1=$(date +%s.%N)
    best=$(awk -v a="$best" -v t0="$t0" -v t1="$t1" 'BEGIN { b = t1 - t0; print (a == "" || b < a) ? b : a }')
  done
  echo "$best"
}

printf "%-28s %10s %12s\n" "sampler (64 samples)" "seconds" "samples/s"
declare -A seconds
for steps in 1 2 4; do
  seconds[lcm$steps]=$(time_run --sampler lcm --steps "$steps")
  printf "%-28s %10.3f %12.1f\n" "LCM $steps step(s)" "${seconds[lcm$steps]}" "$(awk -v s="${seconds[lcm$steps]}" 'BEGIN { print 64 / s }')"
done
seconds[ddim]=$(time_run --sampler ddim --steps 50 --guidance 2)
printf "%-28s %10.3f %12.1f\n" "DDIM 50 steps, CFG s=2" "${seconds[ddim]}" "$(awk -v s="${seconds[ddim]}" 'BEGIN { print 64 / s }')"
awk -v d="${seconds[ddim]}" -v l="${seconds[lcm4]}" 'BEGIN { printf "speed-up of LCM 4 steps over DDIM 50 with CFG: %.1fx\n", d / l }'
