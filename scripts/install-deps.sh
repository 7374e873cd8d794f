#!/usr/bin/env bash
# Installs the Debian packages this project builds against. Idempotent and quiet: packages
# already present are skipped, so a second run costs one dpkg query.
# Usage: scripts/install-deps.sh [--with-data] [--with-browser] [--with-fuzzer] [--with-torch] [--with-sklearn]
#   --with-data     the Fashion-MNIST package (dataset-fashion-mnist), for the main job
#   --with-browser  headless Chromium, which the report's render check opens reports in
#   --with-fuzzer   clang with libFuzzer and LLVM's OpenMP, for scripts/fuzz.sh
#   --with-torch    Debian's PyTorch (python3-torch, CPU), for scripts/torch_interop.py and the test
#                   that loads this engine's checkpoints into PyTorch (TorchInterop.*)
#   --with-sklearn  Debian's scikit-learn (python3-sklearn), for the test that recomputes cac_eval's
#                   AUROC of every score from scores.csv (Scores.AurocOfEveryScoreAsScikitLearnComputesIt)
set -euo pipefail
pkgs=(cmake ninja-build g++ libfmt-dev libgtest-dev libopenblas-openmp-dev libcli11-dev
      nlohmann-json3-dev zlib1g-dev libjpeg62-turbo-dev libmatio-dev)
for a in "$@"; do
  case "$a" in
    --with-data) pkgs+=(dataset-fashion-mnist) ;;
    --with-browser) pkgs+=(chromium) ;;
    --with-fuzzer) pkgs+=(clang libclang-rt-dev libomp-dev) ;;
    --with-torch) pkgs+=(python3-torch) ;;
    --with-sklearn) pkgs+=(python3-sklearn) ;;
    *) echo "install-deps: unknown option $a" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
