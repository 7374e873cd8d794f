#!/usr/bin/env bash
# The end-to-end measurement of issue 23 (gpu-check.sh's first stage, `e2e`): the main job's full
# schedule through cac_train, the PyTorch peer on the same data, aggregate throughput of several
# runs per GPU, the projected paper protocol, then as much of the 5-trial CAC + CE Fashion-MNIST
# benchmark as the time allows. Every part has its own time limit, so one that hangs costs only
# its share; results go to OUT_DIR (e2e.txt is the summary, one line per measurement).
#
#   scripts/e2e.sh BUILD_DIR FASHION_MNIST_DIR OUT_DIR [--device cuda|cpu] [--quick] [--parts core|all]
#
# --quick: a few images and epochs of each part (a check of the script itself on a CPU; its
# numbers mean nothing). --parts core (the default) runs what the issue's targets need first and
# fits one 10-minute device call with the build: the full schedule, each feature's effect (CUDA
# graphs, data on the device) on short runs, the replayed step of cac_bench at the same shape, the
# PyTorch peer; all adds the projection, --per-gpu and the 5-trial benchmark (about 25 minutes
# more at most). Set E2E_PYTHON to the python3 that has PyTorch (default: python3).
set -uo pipefail
usage="usage: scripts/e2e.sh BUILD_DIR FASHION_MNIST_DIR OUT_DIR [--device cuda|cpu] [--quick] [--parts core|all]"
build=$(realpath "${1:?$usage}")
data=$(realpath "${2:?$usage}")
out=$(realpath -m "${3:?$usage}")
shift 3
device=cuda
quick=false
parts=core
while (($#)); do
  case "$1" in
    --device) device=${2:?"e2e: --device needs cuda or cpu"}; shift 2 ;;
    --quick) quick=true; shift ;;
    --parts) parts=${2:?"e2e: --parts needs core or all"}; shift 2
      [[ $parts == core || $parts == all ]] || { echo "e2e: --parts $parts: expected core or all" >&2; exit 2; } ;;
    *) echo "e2e: unknown option $1 ($usage)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
py=${E2E_PYTHON:-python3}
mkdir -p "$out"
summary="$out/e2e.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The protocol's schedule, or a sliver of it with --quick.
if $quick; then
  full=(--epochs 1,1 --train-limit 300)
  short=(--epochs 1 --lr 0.01 --train-limit 300)
  peer=(--epochs 1,1 --train-limit 300)
  per_gpu_counts=(2)
  short_trials=0
  all_trials=0
  limit() { echo 600; }
else
  full=()
  short=(--epochs 3 --lr 0.01)
  peer=(--epochs 3 --lr 0.01)
  per_gpu_counts=(1 2 4)
  short_trials=0,1
  all_trials=0,1,2,3,4
  limit() { echo "$1"; }
fi

# 1. The main job's full schedule (35 + 35 epochs, validation every epoch), CAC, then its evaluation.
say "== e2e $(date -u +%FT%TZ), device $device$($quick && echo ' (quick: not a measurement)')"
run=$out/fm-cac
rm -rf "$run"
t0=$(now)
timeout "$(limit 240)" "$build/apps/cac_train" --dataset FashionMNIST --trial 0 --data-dir "$data" --out "$run" \
  --device "$device" "${full[@]}" >"$out/train-full.log" 2>&1
rc=$?
t1=$(now)
timeout "$(limit 60)" "$build/apps/cac_eval" --run "$run" --device "$device" --json "$run/eval.json" \
  --scores cac,mls >"$out/eval-full.log" 2>&1
rc2=$?
metrics=$("$py" -c "import json,sys; m=json.load(open(sys.argv[1]))['runs'][0]; print(f\"accuracy {m['accuracy']:.4f} AUROC {m['auroc']:.4f} OSCR {m['oscr']:.4f}\")" "$run/eval.json" 2>/dev/null)
say "cac_train full schedule (CAC, FashionMNIST trial 0): rc=$rc $(secs "$t0" "$t1") s of training; cac_eval rc=$rc2; ${metrics:-no eval.json}"
grep -E "^epoch +[0-9]+/[0-9]+ .*\] +[0-9]+/[0-9]+ " "$out/train-full.log" | tail -1 | tee -a "$summary"

grep -E "training data: |validation data: |CUDA graphs: |GPU busy" "$out/train-full.log" | sed -n '1,4p;$p' |
  tee -a "$summary"

# 1b. Each feature's effect on a short run: CUDA graphs on/off x the training set on the GPU
# (auto) or the host loader; the last epoch's progress line has its training images/s.
for mode in "auto auto" "off auto" "auto off" "off off"; do
  set -- $mode
  name=fm-graph-$1-data-$2
  rm -rf "$out/$name"
  t0=$(now)
  timeout "$(limit 60)" "$build/apps/cac_train" --dataset FashionMNIST --trial 0 --data-dir "$data" \
    --out "$out/$name" --device "$device" --graph $1 --data-on-device $2 "${short[@]}" >"$out/train-$name.log" 2>&1
  say "cac_train --graph $1 --data-on-device $2, short schedule: rc=$? $(secs "$t0" "$(now)") s;$(grep -E 'GPU busy' \
    "$out/train-$name.log" | tail -1 | sed 's/.*(\(.*\)).*/ \1/')"
  grep -E "^epoch +[0-9]+/[0-9]+ .*\] +[0-9]+/[0-9]+ " "$out/train-$name.log" | tail -1 | tee -a "$summary"
done

# 1c. The replayed step alone at the same shape (Fashion-MNIST: 1 channel, 32x32, batch 128, 6
# classes): what the training loop's images/s is compared with.
if [[ $device == cuda ]]; then
  timeout "$(limit 60)" "$build/bench/cac_bench" step --device cuda --graph --channels 1 --batch 128 --iters 200 \
    >"$out/bench-step.txt" 2>&1
  say "cac_bench step --graph (1x32x32, batch 128): rc=$?"
  grep -E "ms/step" "$out/bench-step.txt" | tee -a "$summary"
fi

# 2. The PyTorch peer on the same data: the authors' 2 loader workers and 8.
for w in 2 8; do
  timeout "$(limit 150)" env -u LD_LIBRARY_PATH $py "$here/../bench/torch_train.py" --data-dir "$data" --device "$device" \
    --workers $w "${peer[@]}" >"$out/torch-train-w$w.txt" 2>&1
  say "bench/torch_train.py --workers $w: rc=$? $(grep -E '^result: ' "$out/torch-train-w$w.txt" | tail -1)"
done
if [[ $parts == all ]] && env -u LD_LIBRARY_PATH $py -c "import torch, sys; sys.exit(0 if hasattr(torch, 'compile') else 1)" 2>/dev/null; then
  timeout "$(limit 300)" env -u LD_LIBRARY_PATH $py "$here/../bench/torch_train.py" --data-dir "$data" --device "$device" \
    --workers 8 --compile "${peer[@]}" >"$out/torch-train-compile.txt" 2>&1
  say "bench/torch_train.py --workers 8 --compile: rc=$? $(grep -E '^result: ' "$out/torch-train-compile.txt" | tail -1)"
fi

[[ $parts == core ]] && exit 0

# 3. One epoch of each benchmark's shape through the same loop, and the paper's protocol projected.
timeout "$(limit 240)" "$build/bench/cac_bench" epoch --dataset all --device "$device" --epochs 2 \
  $($quick && echo --scale 0.002) >"$out/bench-epoch.txt" 2>&1
say "cac_bench epoch --dataset all: rc=$?"
grep -E "per run|^all:" "$out/bench-epoch.txt" | tee -a "$summary"

# 4. Several runs per GPU: aggregate training images/s of 4 short runs at 1, 2 and 4 at a time.
gpu_flags=()
[[ $device == cuda ]] && gpu_flags=(--gpus 0)
for n in "${per_gpu_counts[@]}"; do
  rm -rf "$out/per-gpu-$n"
  extra=()
  [[ $device == cuda ]] && extra=(--per-gpu $n)
  timeout "$(limit 240)" env CAC_BIN_DIR="$build/apps" bash "$here/benchmark.sh" FashionMNIST "$data" "$out/per-gpu-$n" \
    --trials $short_trials --methods cac,ce "${gpu_flags[@]}" "${extra[@]}" --device "$device" "${short[@]}" \
    >"$out/per-gpu-$n.log" 2>&1
  say "benchmark.sh --per-gpu $n (trials $short_trials x cac,ce, short schedule): rc=$? $(grep -E '^benchmark: ' "$out/per-gpu-$n.log" | tail -1)"
done

# 5. The 5-trial CAC + CE Fashion-MNIST benchmark, full schedule, 4 runs at a time, evaluated
# together; as many runs as the limit allows (run the same command again to finish it).
rm -rf "$out/benchmark"
extra=()
[[ $device == cuda ]] && extra=(--gpus 0 --per-gpu 4)
t0=$(now)
timeout "$(limit 480)" env CAC_BIN_DIR="$build/apps" bash "$here/benchmark.sh" FashionMNIST "$data" "$out/benchmark" \
  --trials $all_trials "${extra[@]}" --device "$device" "${full[@]}" >"$out/benchmark.log" 2>&1
rc=$?
say "benchmark.sh FashionMNIST trials $all_trials x cac,ce: rc=$rc in $(secs "$t0" "$(now)") s; $(grep -E '^benchmark: ' "$out/benchmark.log" | tail -1)"
grep -E "^mean\+-std" "$out/benchmark.log" | tee -a "$summary" || true  # (none with a single trial)
