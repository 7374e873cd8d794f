#!/usr/bin/env bash
# Fuzzes every reader of a file a user hands the programs (tests/fuzz: IDX, CIFAR, SVHN .mat, JPEG,
# PNG, safetensors checkpoints, the JSON records) with libFuzzer under ASan + UBSan.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     default: 60 s each, all targets
# Targets: idx cifar svhn jpeg png checkpoint records. The corpus grows in build-fuzz/corpus/<target>
# (kept between runs); an input that crashes, leaks an exception other than cac::Error, or makes a
# reader allocate over 2 GiB is saved in build-fuzz/findings/<target>/ and the script exits 1.
# Replay one: build-fuzz/tests/fuzz/fuzz_<target> build-fuzz/findings/<target>/<file>. Once fixed,
# turn it into a Data*/Checkpoint* test so CI keeps it fixed (see tests/test_data.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number (got '$seconds')" >&2; exit 2; }
shift || true
targets=("$@")
((${#targets[@]})) || targets=(idx cifar svhn jpeg png checkpoint records)
for t in "${targets[@]}"; do
  [[ -f tests/fuzz/fuzz_$t.cpp ]] || { echo "fuzz.sh: no target '$t' (tests/fuzz/fuzz_$t.cpp)" >&2; exit 2; }
done

bash scripts/install-deps.sh --with-fuzzer
dir=${BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCAC_CUDA=OFF -DCAC_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$dir" --target fuzz_seeds "${targets[@]/#/fuzz_}"
"$dir/tests/fuzz/fuzz_seeds" "$dir/seeds" >/dev/null

found=0
for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t" "$dir/findings/$t"
  cp -n "$dir/seeds/$t"/* "$dir/corpus/$t/" 2>/dev/null || true
  if [[ $t == png ]]; then cp -n tests/data/png/*.png "$dir/corpus/png/"; fi  # libpng's encodings of every format
  log="$dir/findings/$t.log"
  before=$(find "$dir/findings/$t" -type f | wc -l)
  # -malloc_limit_mb: a reader must not allocate gigabytes because a small file says so.
  "$dir/tests/fuzz/fuzz_$t" "$dir/corpus/$t" -max_total_time="$seconds" -max_len=65536 \
    -rss_limit_mb=4096 -malloc_limit_mb=2048 -artifact_prefix="$dir/findings/$t/" -print_final_stats=1 \
    >"$log" 2>&1 || true
  after=$(find "$dir/findings/$t" -type f | wc -l)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  corpus=$(find "$dir/corpus/$t" -type f | wc -l)
  if ((after > before)); then
    found=1
    printf 'fuzz_%-11s %9s runs  corpus %5s  NEW FINDING: %s (log: %s)\n' "$t" "${runs:-?}" "$corpus" \
      "$(ls -t "$dir/findings/$t" | head -1)" "$log"
  else
    printf 'fuzz_%-11s %9s runs  corpus %5s  no findings\n' "$t" "${runs:-?}" "$corpus"
  fi
done
exit $found
