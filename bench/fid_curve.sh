#!/usr/bin/env bash
# FID against training steps (issue 15: does second-order Ψ reach LCD-DDIM's 4-step FID in fewer steps?).
# For each run, every checkpoint's adapter is exported (lcd-train --export-checkpoint) and scored with
# bench/quality on one row (default lcm:4, 1,000 samples); writes OUT.tsv (label, step, FID, class accuracy)
# and OUT.svg (one polyline per run).
# Usage: bench/fid_curve.sh OUT LABEL=CHECKPOINT_DIR [LABEL=CHECKPOINT_DIR ...]   (a LABEL holds no "=")
# Env: LCDKIT_BUILD_DIR (default build), EVAL (default lcm:4), PRECISION (default fp32), THREADS (default 2),
#      EVERY (score only steps that are multiples of it; default 100), STYLE (quality's --style, e.g. invert for
#      an LCF run on restyled data; default none).
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 2)) || { echo "usage: bench/fid_curve.sh OUT LABEL=CHECKPOINT_DIR..." >&2; exit 2; }
out="$1"; shift
build="${LCDKIT_BUILD_DIR:-build}" eval_spec="${EVAL:-lcm:4}" precision="${PRECISION:-fp32}"
threads="${THREADS:-2}" every="${EVERY:-100}" style_flags=()
[ -z "${STYLE:-}" ] || style_flags=(--style "$STYLE")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

printf "run\tstep\tfid\tclass_acc\n" > "$tmp/curve.tsv"
for arg in "$@"; do
  label="${arg%%=*}" dir="${arg#*=}"
  [ -d "$dir" ] || { echo "fid_curve.sh: $dir: no such checkpoint directory" >&2; exit 1; }
  for ckpt in "$dir"/checkpoint-*.h5; do
    step=$((10#$(basename "$ckpt" .h5 | sed 's/checkpoint-//')))
    ((step % every == 0)) || continue
    msg=$("$build/lcd-train" --export-checkpoint "$ckpt" --out "$tmp/adapter.safetensors" 2>&1) || { echo "$msg" >&2; exit 1; }
    # quality's table row: sampler steps guidance FID accuracy% [style%] seconds
    row=$("$build/bench/quality" --model models/fmnist-ldm-v1 --lora "$tmp/adapter.safetensors" \
            --eval "$eval_spec" --precision "$precision" --threads "$threads" "${style_flags[@]}" | awk 'NF >= 5 && $4 ~ /^[0-9.]+$/ { r = $0 } END { print r }')
    [ -n "$row" ] || { echo "fid_curve.sh: bench/quality printed no row for $ckpt" >&2; exit 1; }
    read -r _ _ _ fid acc _ <<< "$row"
    printf "%s\t%d\t%s\t%s\n" "$label" "$step" "$fid" "$acc" | tee -a "$tmp/curve.tsv"
  done
done

# One polyline per run; x: step, y: FID (axes from the data).
awk -F'\t' -v title="FID ($eval_spec) against training steps" 'NR > 1 {
    n[$1]++; x[$1, n[$1]] = $2; y[$1, n[$1]] = $3
    if (!($1 in seen)) { seen[$1] = 1; order[++runs] = $1 }
    if (xmax < $2) xmax = $2
    if (ymin == "" || ymin > $3) ymin = $3
    if (ymax < $3) ymax = $3
  } END {
    w = 520; h = 320; p = 48; split("#1f77b4 #d62728 #2ca02c #9467bd #ff7f0e", colour, " ")
    if (ymax == ymin) ymax = ymin + 1
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" style=\"background:#fff\">\n", w, h
    printf "<text x=\"%d\" y=\"18\" font-size=\"13\">%s</text>\n", p, title
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n", p, h - p, w - p, h - p
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n", p, p, p, h - p
    printf "<text x=\"%d\" y=\"%d\" font-size=\"11\">%.1f</text><text x=\"2\" y=\"%d\" font-size=\"11\">%.1f</text>\n", 2, p + 4, ymax, h - p, ymin
    printf "<text x=\"%d\" y=\"%d\" font-size=\"11\">0</text><text x=\"%d\" y=\"%d\" font-size=\"11\">step %d</text>\n", p, h - p + 16, w - p - 40, h - p + 16, xmax
    for (r = 1; r <= runs; r++) {
      k = order[r]; c = colour[(r - 1) % 5 + 1]
      printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c
      for (i = 1; i <= n[k]; i++)
        printf "%.1f,%.1f ", p + (w - 2 * p) * x[k, i] / xmax, h - p - (h - 2 * p) * (y[k, i] - ymin) / (ymax - ymin)
      printf "\"/>\n<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"%s\">%s</text>\n", w - p - 150, p + 16 * r, c, k
    }
    print "</svg>"
  }' "$tmp/curve.tsv" > "$tmp/curve.svg"
mv "$tmp/curve.tsv" "$out.tsv"
mv "$tmp/curve.svg" "$out.svg"
echo "fid_curve.sh: wrote $out.tsv and $out.svg"
