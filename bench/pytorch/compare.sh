#!/usr/bin/env bash
# lcdkit against PyTorch on the same CPU and thread count, in one run (issue 13): each workload of
# bench/step_bench.cpp and bench/pytorch/bench_torch.py in its own process, lcdkit in fp32 and bf16 and
# PyTorch in fp32 and its best bf16 (the model cast whole; autocast fails in group_norm on Debian's 1.13),
# the four sides interleaved per workload. Prints the CPU and its flags, the ceiling (oneDNN's own rate at
# this UNet's layer shapes, bench/ceiling_bench.cpp, measured in the same run), per workload the median
# seconds, the speed-up over PyTorch fp32, lcdkit's GFLOP/s and its fraction of the ceiling of its precision,
# and peak resident memory; then the lcd-step with one busy process (`yes`) started beside it.
# The PyTorch side needs Debian's python3-torch (bench only) and OpenBLAS for its linear layers (without it
# Debian's libblas.so.3 is the slow reference BLAS):  apt-get install python3-torch libopenblas0-openmp
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
for b in bench_steps bench_ceiling; do
  [ -x "$build/bench/$b" ] || { echo "compare.sh: $build/bench/$b is missing; build first" >&2; exit 1; }
done

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores online"
flags=$(grep -m1 '^flags' /proc/cpuinfo)
printf "flags:"
for f in avx2 avx512f avx512_bf16 amx_bf16; do
  case " $flags " in *" $f "*) printf " %s" "$f" ;; *) printf " no-%s" "$f" ;; esac
done
echo
"$python" bench/pytorch/check_golden.py ../shared/golden > /dev/null 2>&1 && echo "PyTorch reference matches the diffusers golden vectors (bench/pytorch/check_golden.py)" \
  || echo "warning: bench/pytorch/check_golden.py did not pass (or ../shared/golden is absent)"
"$python" -c "import torch; print(f'PyTorch {torch.__version__}; lcdkit and PyTorch both run with $threads thread(s)')"
blas=$(readlink -f "$(/sbin/ldconfig -p | awk '/libblas.so.3 .*x86-64/ { print $NF; exit }')")
echo "BLAS behind PyTorch: $blas"
case "$blas" in *openblas*|*mkl*|*blis*) ;; *) echo "warning: that is not an optimised BLAS; apt-get install libopenblas0-openmp" ;; esac

read -r _ _ ceil32 _ ceil16 _ _ < <("$build/bench/bench_ceiling" --threads "$threads")
echo "ceiling (oneDNN at the UNet's layer shapes, batch 64): fp32 $ceil32 GFLOP/s, bf16 $ceil16 GFLOP/s"
echo

declare -A reps=([unet-fwd]=10 [unet-fwd-128]=7 [diffusion-step]=5 [lcd-step]=7 [lcm4]=5 [ddim50]=3 [lcm4-latents]=5 [ddim50-latents]=3)
lcdkit() {  # case precision → "seconds MiB GFLOP"
  local r
  r=$("$build/bench/bench_steps" --case "$1" --threads "$threads" --reps "${reps[$1]}" --warmup 1 --precision "$2" 2>/dev/null)
  echo "$r" | awk '{ print $2, $3, $4 }'
}
torch() {  # case dtype → "seconds MiB" or "n/a n/a"
  local r
  r=$(cd bench/pytorch && "$python" bench_torch.py "$1" --model ../../models/fmnist-ldm-v1 --threads "$threads" \
        --reps "${reps[$1]}" --warmup 1 --dtype "$2")
  case "$r" in *n/a*) echo "n/a n/a" ;; *) echo "$r" | awk '{ print $2, $3 }' ;; esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2fx", a / b }'; }
rate() { awk -v f="$1" -v s="$2" -v c="$3" 'BEGIN { r = f / s; if (c == "n/a") printf "%5.0f    n/a", r; else printf "%5.0f %5.0f%%", r, 100 * r / c }'; }

printf "%-15s %9s %9s %9s %9s | %8s %8s | %16s %16s | %11s %11s\n" "workload" "lcd fp32" "lcd bf16" "pt fp32" "pt bf16" \
  "x fp32" "x bf16" "GFLOP/s fp32 %ceil" "GFLOP/s bf16 %ceil" "MiB lcd f/b" "MiB pt f/b"
for c in unet-fwd unet-fwd-128 diffusion-step lcd-step lcm4 ddim50 lcm4-latents ddim50-latents; do
  read -r l32 m32 g32 < <(lcdkit "$c" fp32)
  read -r l16 m16 g16 < <(lcdkit "$c" bf16)
  read -r p32 pm32 < <(torch "$c" fp32)
  read -r p16 pm16 < <(torch "$c" bf16)
  printf "%-15s %9.3f %9.3f %9s %9s | %8s %8s | %16s %16s | %5.0f/%-5.0f %5s/%-5s\n" "$c" "$l32" "$l16" "$p32" "$p16" \
    "$(ratio "$p32" "$l32")" "$(ratio "$p32" "$l16")" "$(rate "$g32" "$l32" "$ceil32")" "$(rate "$g16" "$l16" "$ceil16")" \
    "$m32" "$m16" "${pm32%.*}" "${pm16%.*}"
  declare "t_${c//-/_}=$l16"
done
awk -v d="$t_ddim50" -v l="$t_lcm4" -v dl="$t_ddim50_latents" -v ll="$t_lcm4_latents" 'BEGIN {
  printf "lcdkit bf16, 64 samples, model loaded: LCM 4 steps is %.1fx faster than DDIM 50 with CFG including the VAE decode, %.1fx for the sampling loops alone\n", d / l, dl / ll }'
echo "(x fp32 / x bf16: PyTorch fp32 seconds over lcdkit's; %ceil: lcdkit's GFLOP/s over the ceiling of its precision)"

echo
# One quiet/busy pair swings on a shared VM (bf16 on the AMD EPYC Zen 5, within one hour: 2.05× in one run of this
# script, 1.58–1.87× in five pairs after it), so an odd number of interleaved pairs per precision, each pair's ratio,
# their median.
busy_pairs=3
echo "lcd-step with one busy process beside it (yes > /dev/null, started here), median seconds, $busy_pairs interleaved pairs:"
for p in fp32 bf16; do
  ratios=() pairs=""
  for _ in $(seq "$busy_pairs"); do
    read -r quiet _ _ < <(lcdkit lcd-step "$p")
    yes > /dev/null &
    busy_pid=$!
    read -r busy _ _ < <(lcdkit lcd-step "$p")
    kill "$busy_pid"
    wait "$busy_pid" 2>/dev/null || true
    r=$(awk -v a="$busy" -v b="$quiet" 'BEGIN { printf "%.2f", a / b }')
    ratios+=("$r")
    pairs+=$(printf "%s%.3f → %.3f s (%sx)" "${pairs:+, }" "$quiet" "$busy" "$r")
  done
  median=$(printf "%s\n" "${ratios[@]}" | sort -n | sed -n "$(( (busy_pairs + 1) / 2 ))p")
  echo "  lcdkit $p: busy/quiet median ${median}x; quiet → busy $pairs"
done
