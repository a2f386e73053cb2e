#!/usr/bin/env bash
# Multi-process scaling of lcd-train on this machine (issue 16; model in docs/scaling.md): the reference
# distillation (configs/fmnist-lcm-lora.json: batch 128, rank 16) for STEPS steps as 1 process × 2 threads,
# 2 processes × 1 thread and 1 process × 1 thread, interleaved ROUNDS times; prints the CPU, then per layout the
# median step time, steps per second and the median time a step spends in collectives (metrics' comm_time:
# the sums of losses and gradients and the agreements, waiting for the slower process included).
# Usage: bench/mpi_scaling.sh [STEPS (default 20)] [ROUNDS (default 2)]
#   Env: LCDKIT_BUILD_DIR (default build), LATENTS (default runs/latents-fashion-mnist-train.h5, built if missing),
#        PRECISION (default auto).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-20}"
rounds="${2:-2}"
build="${LCDKIT_BUILD_DIR:-build}"
latents="${LATENTS:-runs/latents-fashion-mnist-train.h5}"
precision="${PRECISION:-auto}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
     "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|amx_bf16)$' | tr '\n' ' ')"

config() {  # $1: run name
  cat > "$work/$1.json" <<EOF
{
  "objective": "lcd",
  "model": "models/fmnist-ldm-v1",
  "output_dir": "$work/$1",
  "seed": 0,
  "data": {"source": "fashion-mnist", "split": "train", "latent_cache": "$PWD/$latents"},
  "lora": {"rank": 16, "alpha": 16},
  "lcd": {"num_ddim_timesteps": 50, "guidance_min": 3.0, "guidance_max": 3.0, "ema_decay": 0.0,
          "loss": "huber", "huber_c": 0.001},
  "optim": {"lr": 1e-4, "weight_decay": 0.01, "max_grad_norm": 1.0, "schedule": "constant"},
  "train": {"steps": $steps, "batch_size": 128, "precision": "$precision"},
  "checkpoint": {"every": 1000000, "keep": 1},
  "log": {"every": 1000000},
  "samples": {"every": 0, "lcm_steps": [1]}
}
EOF
  echo "$work/$1.json"
}

# Median of a metrics field over the steps after the first (which warms caches and packs weights).
median_field() {  # $1: metrics.jsonl, $2: field
  grep -o "\"$2\":[0-9.e+-]*" "$1" | tail -n +2 | cut -d: -f2 | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'
}

mpirun_cmd=(mpirun --allow-run-as-root --oversubscribe)  # mpirun binds each process to its own core
export OMPI_MCA_btl_vader_single_copy_mechanism=none
declare -A step_times comm_times
layouts=("1x2" "2x1" "1x1")
for ((round = 1; round <= rounds; round++)); do
  for layout in "${layouts[@]}"; do
    run="$layout-$round"
    cfg="$(config "$run")"
    procs="${layout%x*}"
    threads="${layout#*x}"
    if [ "$procs" = 1 ]; then
      "$build/lcd-train" "$cfg" --threads "$threads" > "$work/$run.log" 2>&1
    else
      "${mpirun_cmd[@]}" -np "$procs" "$build/lcd-train" "$cfg" --threads "$threads" > "$work/$run.log" 2>&1
    fi
    step_times[$layout]+="$(median_field "$work/$run/metrics.jsonl" step_time) "
    [ "$procs" = 1 ] || comm_times[$layout]+="$(median_field "$work/$run/metrics.jsonl" comm_time) "
  done
done

median_of() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
printf "%-22s %12s %10s %14s\n" "layout (batch 128)" "step s" "steps/s" "collectives s"
for layout in "${layouts[@]}"; do
  t="$(echo "${step_times[$layout]}" | median_of)"
  c="-"
  [ -z "${comm_times[$layout]:-}" ] || c="$(echo "${comm_times[$layout]}" | median_of)"
  printf "%-22s %12.3f %10.3f %14s\n" "${layout%x*} proc × ${layout#*x} thread" "$t" "$(awk -v t="$t" 'BEGIN {print 1 / t}')" "$c"
done
echo "(medians over $rounds interleaved rounds of $steps steps, the first step of each run left out; precision $precision)"
