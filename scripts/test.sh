#!/usr/bin/env bash
# Installs what the build needs, configures, builds and runs the whole test suite.
#   scripts/test.sh                 CUDA backend when nvcc is present (GPU tests skip without a GPU)
#   scripts/test.sh --cpu-only      -DCAC_CUDA=OFF: the CPU engine alone
#   scripts/test.sh --asan          the data readers' tests under AddressSanitizer + UBSan (CPU only)
# Extra arguments after -- go to ctest. BUILD_DIR overrides the build folder.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=default
ctest_args=()
while (($#)); do
  case "$1" in
    --cpu-only) mode=cpu ;;
    --asan) mode=asan ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "test.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done
# The default mode also opens a report in headless Chromium (Report.RendersInChromium) and loads a
# checkpoint into PyTorch (TorchInterop.*).
if [[ $mode == default ]]; then bash scripts/install-deps.sh --with-browser --with-torch; else bash scripts/install-deps.sh; fi
targets=()
case "$mode" in
  # With nvcc present the CUDA backend is required, not AUTO: a machine that lost cuDNN fails here
  # instead of quietly testing the CPU engine alone.
  default) dir=${BUILD_DIR:-build}; flags=()
           if [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null; then flags=(-DCAC_CUDA=ON); fi ;;
  cpu) dir=${BUILD_DIR:-build-cpu}; flags=(-DCAC_CUDA=OFF) ;;
  asan) dir=${BUILD_DIR:-build-asan}; flags=(-DCAC_CUDA=OFF -DCAC_ASAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
        targets=(--target test_data); ctest_args=(-R "^Data" "${ctest_args[@]}") ;;
esac
cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
cmake --build "$dir" "${targets[@]}"
ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" "${ctest_args[@]}"
