#!/usr/bin/env bash
# Install.ProgramsAndScriptsWorkFromThePrefix: `cmake --install BUILD --prefix PREFIX` gives
# programs that run from PREFIX/bin with the libraries they were built against (OpenBLAS's OpenMP
# build, CUDA, cuDNN: nothing unresolved), and scripts that find those programs.
#   tests/install_check.sh BUILD_DIR PREFIX
set -euo pipefail
build=$1
prefix=$2
fail() { echo "install check: $*" >&2; exit 1; }
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
for p in cac_train cac_eval cac_predict cac_bench; do
  [[ -x $prefix/bin/$p ]] || fail "$p was not installed into $prefix/bin"
  "$prefix/bin/$p" --help >/dev/null || fail "$prefix/bin/$p --help exited with $?"
  # ldd's output is read whole first: `ldd | grep -q` under pipefail fails at random when grep
  # exits early and ldd dies of SIGPIPE (seen once in CI).
  libs=$(ldd "$prefix/bin/$p")
  if grep -q "not found" <<<"$libs"; then
    echo "$libs" >&2
    fail "$prefix/bin/$p has unresolved libraries"
  fi
done
# Built against OpenBLAS's OpenMP build: the installed program must load that one, not the
# system's default alternative (which would run two thread pools against each other).
if grep -q "^CAC_OPENBLAS_LIB:.*openblas-openmp" "$build/CMakeCache.txt"; then
  libs=$(ldd "$prefix/bin/cac_train")
  grep -q "openblas-openmp/libopenblas" <<<"$libs" ||
    fail "the installed cac_train does not load OpenBLAS's OpenMP build: $(grep blas <<<"$libs")"
fi
scripts=$prefix/share/cac-engine/scripts
for s in benchmark.sh fp-operating-points.sh render-report.sh torch_interop.py; do
  [[ -x $scripts/$s ]] || fail "$scripts/$s missing or not executable"
done
[[ -f $scripts/gpu-queue.sh ]] || fail "$scripts/gpu-queue.sh (sourced by benchmark.sh --gpus) missing"
[[ -f $prefix/share/cac-engine/configs/datasets.json ]] || fail "configs not installed"
# The installed benchmark script runs the installed cac_train: on a missing data folder the error
# is cac_train's, naming the folder (not the script's "no cac_train/cac_eval" message).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if out=$(cd "$tmp" && "$scripts/benchmark.sh" MNIST "$tmp/no-such-data" "$tmp/bench" --trials 0 --methods cac 2>&1); then
  fail "benchmark.sh succeeded without data"
fi
grep -q "no cac_train" <<<"$out" && fail "the installed benchmark.sh did not find the installed programs: $out"
grep -q "no-such-data" <<<"$out" || fail "expected cac_train's error naming the data folder, got: $out"
echo "install check: programs, libraries and scripts work from $prefix"
