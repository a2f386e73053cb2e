#!/usr/bin/env bash
# Retrains the quality metric's Fashion-MNIST classifier with lcdkit's autograd and writes
# bench/classifier/fmnist_classifier.safetensors (the shipped weights came from this script).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
"${LCDKIT_BUILD_DIR:-build}/bench/train_classifier" bench/classifier/fmnist_classifier.safetensors \
  --epochs "${EPOCHS:-4}" --threads "${LCDKIT_THREADS:-$(nproc)}"
