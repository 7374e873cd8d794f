#!/usr/bin/env bash
# Installs what is needed, builds, then trains CAC on Fashion-MNIST trial 0 (from the Debian package
# dataset-fashion-mnist) and evaluates it (closed-set accuracy, AUROC, OSCR, ...).
#   GPU present: the full MNIST protocol schedule (35 + 35 epochs, batch 128).
#   CPU only:    a budget that fits about 10 minutes on 2 cores: 6000 training images, 2 + 1 epochs.
# Extra arguments go to cac_train (e.g. --method ce for the cross-entropy baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-data
cmake -S . -B build -G Ninja >/dev/null
cmake --build build
data=/usr/share/datasets/fashion-mnist
run=runs/fashionmnist-trial0-$(date +%Y%m%d-%H%M%S)
gpu=false
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  if ./build/apps/cac_train --version | grep -q "built without CUDA"; then
    echo "main-job: this machine has a GPU, but the build has no CUDA backend (no nvcc found: install the" \
         "CUDA toolkit and cuDNN, then rerun); training on the CPU with the smaller budget" >&2
  else
    gpu=true
  fi
fi
if $gpu; then
  ./build/apps/cac_train --dataset FashionMNIST --trial 0 --data-dir "$data" --out "$run" --device cuda "$@"
  device=cuda
else
  ./build/apps/cac_train --dataset FashionMNIST --trial 0 --data-dir "$data" --out "$run" --device cpu \
    --train-limit 6000 --epochs 2,1 "$@"
  device=cpu
fi
./build/apps/cac_eval --run "$run" --device "$device" --json "$run/eval.json" --save-scores "$run/scores.csv" \
  --report "$run/report.html" --title "CAC on Fashion-MNIST trial 0 ($device)"
echo "run folder: $run (config.json, metrics.csv, train.log, best.safetensors, eval.json, scores.csv, report.html)"
# A screenshot of the report when Chromium is installed (scripts/install-deps.sh --with-browser).
bash scripts/render-report.sh "$run/report.html" "$run/report.png" || true
