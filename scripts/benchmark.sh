#!/usr/bin/env bash
# One open-set benchmark the way the paper reports it: the five standard known/unknown trials,
# each trained with CAC and with the cross-entropy baseline, then evaluated together: metrics per
# run and their mean ± std per method on stdout, in JSON and in one HTML report.
#
#   scripts/benchmark.sh DATASET DATA_DIR OUT_DIR [--trials 0,1,2,3,4] [--methods cac,ce] [--gpus 0,1,...]
#                        [--per-gpu N] [cac_train flags ...]
#
# --gpus LIST trains up to one run per listed GPU at a time (each run sees only its GPU, through
# CUDA_VISIBLE_DEVICES; numbers count the GPUs this command may see, so under a scheduler that set
# CUDA_VISIBLE_DEVICES=2,5 --gpus 0,1 means GPUs 2 and 5; the data-loader threads are shared out,
# nproc / GPUs each, unless --workers is given; a GPU listed twice, e.g. 0,0, trains two runs at a
# time on it); each run's console output goes to OUT_DIR/logs/<method>-t<trial>.log. Without it the
# runs train one after the other, printing to the terminal. --per-gpu N trains N runs at a time on
# each listed GPU (--gpus 0 when not given): a classifier32 step uses a small share of a large GPU.
# The end says how long the training took (wall) and the images per second of all the runs together.
#
# DATASET: MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR+10, CIFAR+50 or TinyImageNet (docs/reproduce.md
# says which files DATA_DIR holds). CIFAR+50, as the CAC authors report it, is not trained: the
# CIFAR+10 networks of the same trials (the same four known classes) are evaluated against the 50
# unknown classes, so `benchmark.sh CIFAR+50` trains CIFAR+10 runs in OUT_DIR (or finds them there)
# and writes both tables: CIFAR+10.{json,html} and CIFAR+50.{json,html} from the same networks. The schedule and augmentation default to the protocol's for the
# dataset (configs/datasets.json); any cac_train flag overrides them, e.g. --device cuda --epochs 5,5,
# or --config ablation.json with settings that have no flag (e.g. {"dropout": 0.3}).
# Runs go to OUT_DIR/<method>-t<trial>; a run that was interrupted (Ctrl-C) or already finished
# continues from its last checkpoint when the command is run again, so only what is missing trains
# (with that command's DATA_DIR, --device and --workers: the data may have moved).
# Writes OUT_DIR/DATASET.json, OUT_DIR/DATASET.html and OUT_DIR/scores.csv (CIFAR+50 also
# OUT_DIR/scores-CIFAR+50.csv).
# CAC_BIN_DIR overrides where cac_train and cac_eval are (default: build/apps of this checkout, or the
# bin/ of the prefix this script was installed into by `cmake --install`).
set -euo pipefail
usage="usage: benchmark.sh DATASET DATA_DIR OUT_DIR [--trials 0,1,2,3,4] [--methods cac,ce] [--gpus 0,1,...] [--per-gpu N] [cac_train flags ...]"
dataset=${1:?$usage}
data=${2:?$usage}
out=${3:?$usage}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
bin=${CAC_BIN_DIR:-$here/../build/apps}
[[ -n ${CAC_BIN_DIR:-} || -x "$bin/cac_train" ]] || bin=$here/../../../bin  # PREFIX/share/cac-engine/scripts
[[ -x "$bin/cac_train" && -x "$bin/cac_eval" ]] || { echo "benchmark: no cac_train/cac_eval in $bin (build first, or set CAC_BIN_DIR)" >&2; exit 2; }
trials=0,1,2,3,4
methods=cac,ce
device=auto
gpus=""
per_gpu=""
workers_given=false
flags=()
resume_flags=()  # what a resumed run may change: where the data is (DATA_DIR), --device, --workers
while (($#)); do
  case "$1" in
    --trials) trials=${2:?"benchmark: --trials needs a list, e.g. 0,1,2,3,4"}; shift 2 ;;
    --methods) methods=${2:?"benchmark: --methods needs a list, e.g. cac,ce"}; shift 2 ;;
    --device) device=${2:?"benchmark: --device needs a value"}; flags+=("$1" "$2"); resume_flags+=("$1" "$2"); shift 2 ;;
    --workers) flags+=("$1" "${2:?"benchmark: --workers needs a value"}"); resume_flags+=("$1" "$2"); workers_given=true; shift 2 ;;
    --gpus) gpus=${2:?"benchmark: --gpus needs a list, e.g. 0,1"}; shift 2 ;;
    --per-gpu) per_gpu=${2:?"benchmark: --per-gpu needs a number, e.g. 2"}; shift 2 ;;
    --out | --trial | --method | --dataset | --resume)
      echo "benchmark: $1 is set by this script (OUT_DIR, --trials, --methods, DATASET)" >&2; exit 2 ;;
    --print-config)
      echo "benchmark: --print-config trains nothing; run cac_train --print-config with the same flags instead" >&2; exit 2 ;;
    *) flags+=("$1"); shift ;;
  esac
done
IFS=, read -r -a trial_list <<< "$trials"
IFS=, read -r -a method_list <<< "$methods"
for t in "${trial_list[@]}"; do
  [[ $t =~ ^[0-4]$ ]] || { echo "benchmark: trial '$t' is not one of 0-4" >&2; exit 2; }
done
for m in "${method_list[@]}"; do
  [[ $m == cac || $m == ce || $m == cac-learnt ]] || { echo "benchmark: method '$m' is not cac, ce or cac-learnt" >&2; exit 2; }
done
if [[ -n $per_gpu ]]; then
  [[ $per_gpu =~ ^[1-9][0-9]?$ ]] || { echo "benchmark: --per-gpu '$per_gpu' is not a number of runs from 1 to 99" >&2; exit 2; }
  IFS=, read -r -a listed <<< "${gpus:-0}"
  gpus=""
  for g in "${listed[@]}"; do
    for ((k = 0; k < per_gpu; ++k)); do gpus+=${gpus:+,}$g; done
  done
fi
if [[ -n $gpus ]]; then
  source "$here/gpu-queue.sh"
  gpu_queue_parse "$gpus" "$device"
  if ! $workers_given; then flags+=(--workers "$gpu_workers"); resume_flags+=(--workers "$gpu_workers"); fi
fi

train_dataset=$dataset
[[ $dataset == CIFAR+50 ]] && train_dataset=CIFAR+10

# Trains (or resumes) run METHOD-tTRIAL; its output goes to stdout.
run_job() {
  local m=${1%-t*} t=${1##*-t} run="$out/$1"
  if [[ -f "$run/last.safetensors" ]]; then
    "$bin/cac_train" --resume "$run" --data-dir "$data" "${resume_flags[@]}"
  else
    "$bin/cac_train" --dataset "$train_dataset" --trial "$t" --method "$m" --data-dir "$data" --out "$run" "${flags[@]}"
  fi
}

mkdir -p "$out"
runs=()
jobs_todo=()
for t in "${trial_list[@]}"; do
  for m in "${method_list[@]}"; do
    runs+=(--run "$out/$m-t$t")
    jobs_todo+=("$m-t$t")
  done
done
started=$(date +%s.%N)
if [[ -n $gpus ]]; then
  gpu_queue_run "$out/logs" "${jobs_todo[@]}" || exit 1
else
  for job in "${jobs_todo[@]}"; do
    echo "== $train_dataset $job: $out/$job"
    run_job "$job"
  done
fi
# Images trained per run: the training set's size (train.log's "N train / M val images") times
# the epochs run in this command (metrics.csv rows; a run resumed here counts all its epochs).
images=0
for job in "${jobs_todo[@]}"; do
  per_epoch=$(sed -n 's/.*, \([0-9]*\) train \/ [0-9]* val images.*/\1/p' "$out/$job/train.log" | head -n 1)
  epochs=$(($(wc -l < "$out/$job/metrics.csv") - 1))
  images=$((images + ${per_epoch:-0} * epochs))
done
awk -v s="$started" -v e="$(date +%s.%N)" -v n="${#jobs_todo[@]}" -v i="$images" -v g="${gpus:-none}" \
  'BEGIN { w = e - s; printf "benchmark: %d runs trained in %.1f s (wall; GPU slots: %s): %.0f images/s together\n", n, w, g, (w > 0 ? i / w : 0) }' 
"$bin/cac_eval" "${runs[@]}" --device "$device" --json "$out/$train_dataset.json" --save-scores "$out/scores.csv" \
  --report "$out/$train_dataset.html" --title "$train_dataset: ${method_list[*]}, trials $trials"
if [[ $dataset == CIFAR+50 ]]; then
  "$bin/cac_eval" "${runs[@]}" --benchmark CIFAR+50 --device "$device" --json "$out/CIFAR+50.json" \
    --save-scores "$out/scores-CIFAR+50.csv" --report "$out/CIFAR+50.html" \
    --title "CIFAR+50 (the CIFAR+10 networks): ${method_list[*]}, trials $trials"
fi
