#!/usr/bin/env bash
# The experiment at false-positive operating points (supplementary section 4): ResNet-18 trained on
# all ten CIFAR10 classes with CAC and with the cross-entropy baseline, then evaluated against two
# unknown sets, the SVHN test set and the CIFAR-100 test images of nine superclasses: correct
# classification rate of the known test images at FPR 1e-1, 1e-2, 1e-3, 1e-4 ("n/a" where the
# unknown set is too small to resolve the rate), OSCR curves and AUROC; a table on stdout, JSON and
# an HTML report.
#
#   scripts/fp-operating-points.sh DATA_DIR OUT_DIR [--gpus 0,1] [cac_train flags ...]
#
# --gpus 0,1 trains the two runs side by side, one per GPU (logs in OUT_DIR/logs; see
# scripts/gpu-queue.sh); without it they train one after the other.
#
# DATA_DIR holds cifar-10-batches-bin/, cifar-100-binary/ and test_32x32.mat (or svhn/test_32x32.mat).
# Defaults: configs/datasets.json, entry CIFAR10-FP (150 + 25 epochs at lr 0.01 / 0.001, batch 128,
# CIFAR10's augmentation); any cac_train flag overrides them, e.g. --epochs 30,10 --device cuda.
# An interrupted run (Ctrl-C) continues where it stopped when the command is run again (with that
# command's DATA_DIR, --device and --workers: the data may have moved).
# Writes OUT_DIR/cac, OUT_DIR/ce (run folders), OUT_DIR/fp-operating-points.{json,html}, scores.csv.
# CAC_BIN_DIR overrides where cac_train and cac_eval are (default: build/apps of this checkout, or the
# bin/ of the prefix this script was installed into by `cmake --install`).
set -euo pipefail
data=${1:?usage: fp-operating-points.sh DATA_DIR OUT_DIR [cac_train flags ...]}
out=${2:?usage: fp-operating-points.sh DATA_DIR OUT_DIR [cac_train flags ...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
bin=${CAC_BIN_DIR:-$here/../build/apps}
[[ -n ${CAC_BIN_DIR:-} || -x "$bin/cac_train" ]] || bin=$here/../../../bin  # PREFIX/share/cac-engine/scripts
[[ -x "$bin/cac_train" && -x "$bin/cac_eval" ]] || { echo "fp-operating-points: no cac_train/cac_eval in $bin (build first, or set CAC_BIN_DIR)" >&2; exit 2; }
device=auto
gpus=""
workers_given=false
flags=()
resume_flags=()  # what a resumed run may change: where the data is (DATA_DIR), --device, --workers
while (($#)); do
  case "$1" in
    --device) device=${2:?"fp-operating-points: --device needs a value"}; flags+=("$1" "$2"); resume_flags+=("$1" "$2"); shift 2 ;;
    --workers) flags+=("$1" "${2:?"fp-operating-points: --workers needs a value"}"); resume_flags+=("$1" "$2"); workers_given=true; shift 2 ;;
    --gpus) gpus=${2:?"fp-operating-points: --gpus needs a list, e.g. 0,1"}; shift 2 ;;
    *) flags+=("$1"); shift ;;
  esac
done
if [[ -n $gpus ]]; then
  source "$here/gpu-queue.sh"
  gpu_queue_parse "$gpus" "$device"
  if ! $workers_given; then flags+=(--workers "$gpu_workers"); resume_flags+=(--workers "$gpu_workers"); fi
fi
# Trains (or resumes) the run of method $1; its output goes to stdout.
run_job() {
  local run="$out/$1"
  if [[ -f "$run/last.safetensors" ]]; then
    "$bin/cac_train" --resume "$run" --data-dir "$data" "${resume_flags[@]}"
  else
    "$bin/cac_train" --dataset CIFAR10-FP --arch resnet18 --method "$1" --data-dir "$data" --out "$run" "${flags[@]}"
  fi
}
mkdir -p "$out"
if [[ -n $gpus ]]; then
  gpu_queue_run "$out/logs" cac ce || exit 1
else
  for method in cac ce; do run_job "$method"; done
fi
"$bin/cac_eval" --run "$out/cac" --run "$out/ce" --arch resnet18 --device "$device" \
  --json "$out/fp-operating-points.json" --save-scores "$out/scores.csv" \
  --report "$out/fp-operating-points.html" --title "ResNet-18 on CIFAR10 at false-positive operating points (CAC vs CE)"
