#!/usr/bin/env bash
# Installs what the build needs, configures, builds and runs the whole test suite.
#   scripts/test.sh                 CUDA backend when nvcc is present (GPU tests skip without a GPU)
#   scripts/test.sh --cpu-only      -DCAC_CUDA=OFF: the CPU engine alone
#   scripts/test.sh --asan          -DCAC_CUDA=OFF under AddressSanitizer + UBSan: every CPU and robustness
#                                   test (a sanitizer report fails the test)
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
if [[ $mode == default ]]; then bash scripts/install-deps.sh --with-browser --with-torch --with-sklearn; else bash scripts/install-deps.sh; fi
targets=()
case "$mode" in
  # With nvcc present the CUDA backend is required, not AUTO: a machine that lost cuDNN fails here
  # instead of quietly testing the CPU engine alone.
  default) dir=${BUILD_DIR:-build}; flags=()
           if [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null; then flags=(-DCAC_CUDA=ON); fi ;;
  cpu) dir=${BUILD_DIR:-build-cpu}; flags=(-DCAC_CUDA=OFF) ;;
  asan) dir=${BUILD_DIR:-build-asan}; flags=(-DCAC_CUDA=OFF -DCAC_ASAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
        # Any report ends the process with an error, so the test fails; the programs the app and
        # robustness tests start are instrumented too.
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
        export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87 ;;
esac
cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
cmake --build "$dir" "${targets[@]}"
ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" "${ctest_args[@]}"
