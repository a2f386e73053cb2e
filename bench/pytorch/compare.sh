#!/usr/bin/env bash
# lcdkit against PyTorch on the same CPU and thread count (issue 8): each workload of bench/step_bench.cpp and
# bench/pytorch/bench_torch.py in its own process, median seconds and peak resident memory, and the ratio
# lcdkit/PyTorch (below 1 = lcdkit faster). The PyTorch side needs Debian's python3-torch (bench only) and a
# real BLAS for its linear layers: without OpenBLAS, Debian's libblas.so.3 is the slow reference BLAS.
#   apt-get install python3-torch libopenblas0-openmp
# Usage: bench/pytorch/compare.sh [THREADS=2] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads="${1:-2}" build="${2:-build}"
python=/usr/bin/python3   # Debian's interpreter, where python3-torch lives
export OMP_NUM_THREADS="$threads"
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "compare.sh: PyTorch is not installed for $python; run: apt-get install python3-torch" >&2
  exit 1
fi
[ -x "$build/bench/bench_steps" ] || { echo "compare.sh: $build/bench/bench_steps is missing; build first" >&2; exit 1; }
"$python" bench/pytorch/check_golden.py ../shared/golden > /dev/null 2>&1 && echo "PyTorch reference matches the diffusers golden vectors (bench/pytorch/check_golden.py)" \
  || echo "warning: bench/pytorch/check_golden.py did not pass (or ../shared/golden is absent)"
"$python" -c "import torch; print(f'PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s) by default; lcdkit and PyTorch both run with $threads')"

blas=$(readlink -f "$(/sbin/ldconfig -p | awk '/libblas.so.3 .*x86-64/ { print $NF; exit }')")
echo "BLAS behind PyTorch: $blas"
case "$blas" in *openblas*|*mkl*|*blis*) ;; *) echo "warning: that is not an optimised BLAS; apt-get install libopenblas0-openmp" ;; esac

declare -A reps=([unet-fwd]=10 [diffusion-step]=5 [lcd-step]=7 [lcm4]=5 [ddim50]=3 [lcm4-latents]=5 [ddim50-latents]=3)
printf "%-16s %11s %11s %15s %12s %12s\n" "workload" "lcdkit s" "PyTorch s" "lcdkit/PyTorch" "lcdkit MiB" "PyTorch MiB"
for c in unet-fwd diffusion-step lcd-step lcm4 ddim50 lcm4-latents ddim50-latents; do
  read -r _ ls lm < <("$build/bench/bench_steps" --case "$c" --threads "$threads" --reps "${reps[$c]}" --warmup 1)
  read -r _ ps pm < <(cd bench/pytorch && "$python" bench_torch.py "$c" --model ../../models/fmnist-ldm-v1 \
                        --threads "$threads" --reps "${reps[$c]}" --warmup 1)
  printf "%-16s %11.3f %11.3f %15.2f %12.0f %12.0f\n" "$c" "$ls" "$ps" "$(awk -v a="$ls" -v b="$ps" 'BEGIN{print a/b}')" "$lm" "$pm"
  declare "t_${c//-/_}=$ls"
done
awk -v d="$t_ddim50" -v l="$t_lcm4" -v dl="$t_ddim50_latents" -v ll="$t_lcm4_latents" 'BEGIN {
  printf "lcdkit, 64 samples, model loaded: LCM 4 steps is %.1fx faster than DDIM 50 with CFG including the VAE decode, %.1fx for the sampling loops alone\n", d / l, dl / ll }'
