#!/usr/bin/env bash
# Installs what is needed, builds, and runs the main job: for now a short CAC demo on synthetic
# images (cac_train on Fashion-MNIST replaces it once the data pipeline and trainer land).
# On a GPU machine it trains on the GPU; otherwise on the CPU with a smaller budget.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-data
cmake -S . -B build -G Ninja >/dev/null
cmake --build build
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  exec ./build/apps/cac_demo --device auto --steps 400 --batch 128 "$@"
else
  exec ./build/apps/cac_demo --device cpu --steps 60 --batch 64 "$@"
fi
