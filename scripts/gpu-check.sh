#!/usr/bin/env bash
# GPU verification on a machine with an NVIDIA GPU and no package registry:
# configure for sm_90, build, run the cuda-labelled tests (and the rest), compute-sanitizer
# (memcheck + racecheck) over the hand-written kernels' tests, both benchmarks and the PyTorch
# comparison; results and logs go to OUT_DIR (summary.txt is the short version).
#
#   scripts/gpu-check.sh OUT_DIR
#   GPU_CHECK_STAGES="e2e tests sanitize bench train" (the default) picks stages ("e2e", first:
#   scripts/e2e.sh, the end-to-end measurement of issue 23 on Fashion-MNIST; E2E_PARTS=core, the
#   default, fits one 10-minute call with the build, E2E_PARTS=all adds about 25 minutes at most,
#   so on a 15-minute device give "e2e" alone first, then "tests"); GPU_CHECK_METHODS
#   the train stage's methods, default "cac ce"; "lab", not a default, runs dev/bn_lab: every
#   batch-norm candidate at the network shapes against the library's rule, and dev/bn_nhwc_lab
#   (the bf16 channels-last forward: library vs a single launch); "bf16", not a default,
#   issue 25's accuracy parity (tf32 vs bf16, three seeds of the main job); "layout", not a
#   default, runs dev/conv_lab: the networks' convolutions in NCHW and NHWC, tf32 and bf16
#   (issue 25's "measure both"); "profile", not a
#   default, runs Nsight Compute on the batch-norm forward kernels; "interop", not a default, runs
#   the TorchInterop tests against this machine's PyTorch; "none" only builds); the build always
#   runs (incremental when build-gpu/ is still there from an earlier call on the same machine).
#
# Build dependencies: if .deps/*.deb exist (scripts/fetch-gpu-deps.sh downloads them on a Debian
# machine) they are unpacked with dpkg -x into .deps/prefix and used from there.
set -uo pipefail
out=$(realpath -m "${1:?usage: scripts/gpu-check.sh OUT_DIR}")
mkdir -p "$out"
cd "$(dirname "$0")/.."
summary="$out/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
step_time() { date +%s; }
t0=$(step_time)

prefix=$PWD/.deps/prefix
if ls .deps/*.deb >/dev/null 2>&1; then
  mkdir -p "$prefix"
  for f in .deps/*.deb; do dpkg -x "$f" "$prefix"; done
  export CMAKE_PREFIX_PATH=$prefix/usr
  export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:$prefix/usr/lib/x86_64-linux-gnu/openblas-openmp:${LD_LIBRARY_PATH:-}
fi
cudnn_flag=()
if [[ ! -f /usr/local/cuda/include/cudnn.h ]]; then
  hdr=$(find / -name cudnn.h -path '*include*' -not -path '/proc/*' 2>/dev/null | head -1)
  if [[ -n "$hdr" ]]; then
    root=$(dirname "$(dirname "$hdr")")
    cudnn_flag=(-DCUDNN_ROOT="$root")
    export LD_LIBRARY_PATH=$root/lib:${LD_LIBRARY_PATH:-}
  fi
fi
export PATH=/usr/local/cuda/bin:$PATH
say "== gpu-check $(date -u +%FT%TZ)"
say "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
say "nvcc: $(nvcc --version | tail -1)"
say "cuDNN: ${cudnn_flag[*]:-with the toolkit}"

build=build-gpu
if ! cmake -S . -B $build -G Ninja -DCAC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    "${cudnn_flag[@]}" >"$out/configure.log" 2>&1; then
  say "configure: FAILED (configure.log)"; tail -30 "$out/configure.log"; exit 1
fi
if ! cmake --build $build -j "$(nproc)" >"$out/build.log" 2>&1; then
  say "build: FAILED (build.log)"; grep -E "error" "$out/build.log" | head -20; exit 1
fi
say "build: ok ($(( $(step_time) - t0 )) s since start)"

stages=" ${GPU_CHECK_STAGES:-e2e tests sanitize bench train} "
want() { [[ "$stages" == *" $1 "* ]]; }
fm=""
for d in .deps/fashion-mnist /usr/share/datasets/fashion-mnist; do [[ -f $d/train-images-idx3-ubyte.gz ]] && fm=$d && break; done

# The end-to-end measurement first (issue 23): what a user's main job costs on this GPU, against
# the PyTorch peer; scripts/e2e.sh says what each part runs.
if want e2e; then
  if [[ -z "$fm" ]]; then
    say "e2e: no Fashion-MNIST (.deps/fashion-mnist from scripts/fetch-gpu-deps.sh, or dataset-fashion-mnist)"
  else
    say "(e2e starts at $(( $(step_time) - t0 )) s)"
    # The runs (checkpoints) stay in runs-gpu/e2e; the logs and summaries come back in OUT_DIR/e2e.
    rm -rf runs-gpu/e2e
    E2E_PYTHON="python3" bash scripts/e2e.sh $build "$fm" runs-gpu/e2e --device cuda --parts "${E2E_PARTS:-core}" \
      >"$out/e2e.log" 2>&1
    say "e2e: rc=$?"
    mkdir -p "$out/e2e"
    cp runs-gpu/e2e/*.txt runs-gpu/e2e/*.log "$out/e2e/" 2>/dev/null
    cp runs-gpu/e2e/fm-cac/metrics.csv "$out/e2e/metrics-full.csv" 2>/dev/null
    tee -a "$summary" <"$out/e2e/e2e.txt"
  fi
fi

# Issue 25's accuracy parity (not a default stage, about 6 full schedules): Fashion-MNIST trial 0,
# seeds 0-2, --precision tf32 and bf16, each evaluated; one line per run and the mean of each.
# BF16_SEEDS="0" (then "1 2" in a second call) splits it where one call cannot hold six runs.
if want bf16; then
  if [[ -z "$fm" ]]; then
    say "bf16: no Fashion-MNIST (.deps/fashion-mnist from scripts/fetch-gpu-deps.sh, or dataset-fashion-mnist)"
  else
    say ""
    say "== bf16 vs tf32: Fashion-MNIST trial 0, full schedule, seeds ${BF16_SEEDS:-0 1 2} (train seconds, accuracy, AUROC)"
    mkdir -p "$out/bf16"
    for seed in ${BF16_SEEDS:-0 1 2}; do
      for p in tf32 bf16; do
        run=runs-gpu/bf16/$p-s$seed
        rm -rf "$run"
        s0=$(step_time)
        timeout 300 $build/apps/cac_train --dataset FashionMNIST --trial 0 --data-dir "$fm" --out "$run" --device cuda \
          --seed $seed --precision $p >"$out/bf16/train-$p-s$seed.log" 2>&1
        rc=$?
        s1=$(step_time)
        timeout 120 $build/apps/cac_eval --run "$run" --device cuda --json "$run/eval.json" --scores cac \
          >"$out/bf16/eval-$p-s$seed.log" 2>&1
        say "$p seed $seed: train rc=$rc $((s1 - s0)) s; $(python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['runs'][0]; print(f\"accuracy {m['accuracy']:.4f} AUROC {m['auroc']:.4f}\")" "$run/eval.json" 2>&1 | tail -1)"
      done
    done
    python3 - "$summary" <<'PY' | tee -a "$summary"
import re, sys
rows = [l for l in open(sys.argv[1]) if re.match(r"^(tf32|bf16) seed \d", l)]
for p in ("tf32", "bf16"):
    acc = [float(re.search(r"accuracy ([\d.]+)", l).group(1)) for l in rows if l.startswith(p) and "accuracy" in l]
    auc = [float(re.search(r"AUROC ([\d.]+)", l).group(1)) for l in rows if l.startswith(p) and "AUROC" in l]
    if acc:
        print(f"{p}: mean accuracy {sum(acc) / len(acc):.4f}, mean AUROC {sum(auc) / len(auc):.4f} over {len(acc)} runs")
PY
  fi
fi

if want tests; then
  # What the engine makes of this GPU (a probe that wrongly said "unusable" would skip every cuda test).
  say "engine: $($build/apps/cac_train --version 2>&1)"
  say "GPU as the engine sees it: $(timeout 60 $build/apps/cac_demo --device cuda --steps 2 --batch 8 2>&1 | head -1)"
  timeout 240 ctest --test-dir $build -L cuda --output-on-failure -j 4 >"$out/ctest-cuda.log" 2>&1
  say "ctest -L cuda: $(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log" | tail -1)"
  grep -E "\(Failed\)|\(SEGFAULT\)|\(Timeout\)|Skipped" "$out/ctest-cuda.log" | head -20 | tee -a "$summary"
  skipped=$(grep -c "(Skipped)" "$out/ctest-cuda.log" || true)
  if ((skipped > 0)); then
    say "WARNING: $skipped cuda tests SKIPPED on a machine with a GPU; the first reason:"
    grep -m1 -A1 "no CUDA device" "$out/ctest-cuda.log" | tee -a "$summary" || true
  fi
fi

if want bench; then
say "(bench starts at $(( $(step_time) - t0 )) s)"
say ""
say "== cac_bench kernels"
timeout 240 $build/bench/cac_bench kernels >"$out/bench-kernels.txt" 2>&1
tee -a "$summary" <"$out/bench-kernels.txt"
say ""
say "== training step, batch 128, 32x32x3: classifier32 and ResNet-18, cac and PyTorch, tf32 and fp32"
{
  for arch in classifier32 resnet18; do
    # --graph: also the same step recorded into a CUDA graph and replayed (a second line).
    timeout 120 $build/bench/cac_bench step --arch $arch --device cuda --channels 3 --iters 50 --warmup 10 --graph
    timeout 120 $build/bench/cac_bench step --arch $arch --device cuda --channels 3 --iters 50 --warmup 10 --precision fp32
    # Issue 25: the bf16 channels-last step.
    timeout 120 $build/bench/cac_bench step --arch $arch --device cuda --channels 3 --iters 50 --warmup 10 --precision bf16 \
      --graph
    timeout 120 env -u LD_LIBRARY_PATH python3 bench/torch_step.py --arch $arch --channels 3
    timeout 120 env -u LD_LIBRARY_PATH python3 bench/torch_step.py --arch $arch --channels 3 --no-tf32
    # The PyTorch user's fast settings (issue 25): bf16 autocast + channels-last, eager, CUDA graph,
    # torch.compile (each refused, saying why, where this PyTorch cannot run it).
    for mode in eager graph compile; do
      timeout 300 env -u LD_LIBRARY_PATH python3 bench/torch_step.py --arch $arch --channels 3 --amp bf16 \
        --channels-last --mode $mode
    done
  done
} >"$out/bench-step.txt" 2>&1
tee -a "$summary" <"$out/bench-step.txt"
fi

# The batch-norm lab (dev/bn_lab): every candidate checked against the CPU twin and timed at the
# network shapes; the "->" lines say whether the library's rule was the fastest.
if want lab; then
  say ""
  say "== dev/bn_lab (batch-norm candidates vs the library's rule, batch 128)"
  timeout 300 $build/dev/bn_lab --iters 20 >"$out/bn-lab.txt" 2>&1
  say "bn_lab: rc=$? $(grep -E 'disagreed' "$out/bn-lab.txt")"
  grep -E "^[0-9]+x|->" "$out/bn-lab.txt" | tee -a "$summary"
  # Issue 25: the bf16 channels-last forward, the library's three launches vs the single launch.
  timeout 120 $build/dev/bn_nhwc_lab --iters 20 >"$out/bn-nhwc-lab.txt" 2>&1
  say "bn_nhwc_lab: rc=$? $(grep -E 'disagreed' "$out/bn-nhwc-lab.txt")"
  grep -E "^[0-9]+x|  (library|single)" "$out/bn-nhwc-lab.txt" | tee -a "$summary"
fi

if want layout; then
  say ""
  say "== dev/conv_lab (cuDNN convolutions at the network shapes: tf32/bf16 x NCHW/NHWC, batch 128)"
  timeout 400 $build/dev/conv_lab --iters 20 >"$out/conv-lab.txt" 2>&1
  say "conv_lab: rc=$?"
  grep -E "^== |one training step|NHWC / NCHW|OVER|no cuDNN" "$out/conv-lab.txt" | tee -a "$summary"
fi

if want sanitize; then
  say "(sanitize starts at $(( $(step_time) - t0 )) s)"
  # The hand-written kernels' tests (cuDNN/cuBLAS internals are not ours), then the kernel benchmark.
  for tool in memcheck racecheck; do
    # Every batch-norm path at the small and odd shapes; at the two largest only the rule and the
    # one-round forwards (memcheck's cost grows with the bytes touched; the run must leave time for
    # a rerun). Racecheck: the rule, the reread and the cluster forward.
    filter='Ops/*:Shapes/*:Paths/*_1x64x32x32:Paths/*_50x4x20x20'
    filter+=':Paths/*_256x2x64x64:Paths/*_128x512x4x4:Paths/*_3x5x7x9:Paths/*_4x4096x2x2'
    filter+=':Paths/*/rule_*:Paths/*/reread_*:Paths/*/cluster_*:-*conv*:*linear*'
    [[ $tool == racecheck ]] && filter='Ops/*:Shapes/*:Paths/*rule*:Paths/*reread*:Paths/*cluster*:-*conv*:*linear*'
    timeout 150 compute-sanitizer --tool $tool --error-exitcode 99 $build/tests/test_cuda \
      --gtest_filter="$filter" >"$out/sanitizer-$tool.log" 2>&1
    rc=$?
    say "compute-sanitizer $tool (kernel tests): rc=$rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer-$tool.log" | tail -1), $(grep -E 'tests ran|PASSED|FAILED  ' "$out/sanitizer-$tool.log" | head -3 | tr '\n' ' ')"
  done
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 99 $build/bench/cac_bench kernels --iters 2 \
    >"$out/sanitizer-bench.log" 2>&1
  say "compute-sanitizer memcheck (cac_bench kernels): rc=$?, $(grep -E 'ERROR SUMMARY' "$out/sanitizer-bench.log" | tail -1)"
fi

# The PyTorch interop tests (CPU work, not in the default stages) against this machine's PyTorch,
# a newer one than Debian's: checkpoints through torch.load/load_state_dict, training steps compared.
if want interop; then
  say ""
  timeout 300 env CAC_PYTHON="env -u LD_LIBRARY_PATH python3" ctest --test-dir $build -R TorchInterop \
    --output-on-failure >"$out/ctest-interop.log" 2>&1
  say "ctest -R TorchInterop (python3: $(env -u LD_LIBRARY_PATH python3 -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)): $(grep -E 'tests passed|tests failed' "$out/ctest-interop.log" | tail -1)"
fi

# Nsight Compute on the batch-norm forward candidates (not in the default stages): duration, DRAM
# throughput and L2 hit rate of one launch each at the conv2 shape; full reports in ncu-*.txt.
if want profile; then
  say ""
  say "== ncu: batch-norm forward kernels (128x64x32x32)"
  if ! command -v ncu >/dev/null; then
    say "ncu: not found on PATH"
  else
    for k in bn_forward_reread bn_forward_cluster bn_backward_single; do
      timeout 180 ncu --clock-control none --kernel-name regex:"$k" --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        $build/bench/cac_bench kernels --iters 5 >"$out/ncu-$k.txt" 2>&1
      say "$k: rc=$? $(grep -E '^ +(Duration|DRAM Throughput|L2 Hit Rate|Memory Throughput) ' "$out/ncu-$k.txt" \
        | sed -E 's/ +/ /g' | tr '\n' ';')"
      grep -E "ERR_NVGPUCTRPERM|==ERROR==" "$out/ncu-$k.txt" | head -2 | tee -a "$summary"
    done
  fi
fi

# The main job's full GPU schedule (Fashion-MNIST trial 0, MNIST protocol: 35 + 35 epochs), CAC and
# the CE baseline, when the dataset travelled along (scripts/fetch-gpu-deps.sh copies it into
# .deps/fashion-mnist) or is installed.
if want train && [[ -n "$fm" ]]; then
  say ""
  say "== Fashion-MNIST trial 0, full schedule on the GPU"
  for method in ${GPU_CHECK_METHODS:-cac ce}; do
    run=runs-gpu/fm-$method
    rm -rf "$run"
    s0=$(date +%s)
    timeout 300 $build/apps/cac_train --dataset FashionMNIST --trial 0 --data-dir "$fm" --out "$run" --device cuda \
      --method $method >"$out/train-$method.log" 2>&1
    rc=$?
    s1=$(date +%s)
    timeout 120 $build/apps/cac_eval --run "$run" --device cuda --json "$run/eval.json" --report "$out/report-$method.html" \
      --title "Fashion-MNIST trial 0, $method, full schedule (GPU)" >"$out/eval-$method.log" 2>&1
    rc2=$?
    s2=$(date +%s)
    say "$method: train rc=$rc $((s1 - s0)) s, eval rc=$rc2 $((s2 - s1)) s"
    tail -4 "$out/eval-$method.log" | tee -a "$summary"
    cp "$run/metrics.csv" "$out/metrics-$method.csv" 2>/dev/null
  done
fi
say "total: $(( $(step_time) - t0 )) s"
# The device tool returns at most 8 files: everything but the summary goes into one archive.
(cd "$out" && find . -type f ! -name summary.txt ! -name logs.tar.gz -printf '%P\n' | tar czf logs.tar.gz -T - \
  && find . -type f ! -name summary.txt ! -name logs.tar.gz -delete)
