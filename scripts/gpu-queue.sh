# Sourced by benchmark.sh and fp-operating-points.sh (bash): trains their runs one per GPU at a
# time instead of one after the other.
#
#   gpu_queue_parse GPUS DEVICE      checks a --gpus list ("0,1,3") against --device; sets gpu_list,
#                                    gpu_visible (each one's CUDA_VISIBLE_DEVICES value) and
#                                    gpu_workers (the loader threads per run: nproc / GPUs)
#   gpu_queue_run LOG_DIR JOB...     runs the caller's `run_job JOB` for each JOB, each with
#                                    CUDA_VISIBLE_DEVICES set to a free GPU of gpu_list and its output
#                                    in LOG_DIR/JOB.log; prints one line per start and end, the end of
#                                    the log of a run that failed; returns 1 when any failed.
# A job writes its exit status to LOG_DIR/JOB.rc when it ends and the queue polls for those files
# (sturdier than tracking children through `wait -n`). Ctrl-C reaches the runs too (one process
# group); a SIGTERM sent to the script alone is passed on to them (pkill, from procps): either way
# they stop at their next batch, the queue waits for them and exits 130, and the same command
# resumes them from their last epoch's checkpoints.

gpu_queue_parse() {
  local g
  IFS=, read -r -a gpu_list <<< "$1"
  ((${#gpu_list[@]})) || { echo "${0##*/}: --gpus needs a list, e.g. 0,1" >&2; exit 2; }
  for g in "${gpu_list[@]}"; do
    [[ $g =~ ^[0-9]+$ ]] || { echo "${0##*/}: GPU '$g' in --gpus is not a GPU number (nvidia-smi -L lists them)" >&2; exit 2; }
  done
  [[ $2 != cpu ]] || { echo "${0##*/}: --gpus runs on GPUs; drop --device cpu (or --gpus)" >&2; exit 2; }
  # GPU numbers count the GPUs this process may see, as CUDA's do: where CUDA_VISIBLE_DEVICES is
  # already set (a batch scheduler's allocation, e.g. 2,5,6,7), --gpus 0,1 means its first two.
  gpu_visible=("${gpu_list[@]}")
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    local -a visible
    local i
    IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
    for i in "${!gpu_list[@]}"; do
      ((gpu_list[i] < ${#visible[@]})) || { echo "${0##*/}: GPU ${gpu_list[i]} in --gpus: only ${#visible[@]} GPU(s) are visible (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES), numbered from 0" >&2; exit 2; }
      gpu_visible[i]=${visible[gpu_list[i]]}
    done
  fi
  gpu_workers=$(( $(nproc) / ${#gpu_list[@]} ))
  ((gpu_workers >= 1)) || gpu_workers=1
}

gpu_queue_run() {
  local logs=$1 job i slot rc
  shift
  mkdir -p "$logs"
  local -a slot_job=() slot_pid=() failed=()
  _gpu_stop() {
    local p
    echo "${0##*/}: interrupted; waiting for the runs to stop (run the same command to resume)" >&2
    if command -v pkill >/dev/null; then
      for p in "${slot_pid[@]}"; do [[ -z $p ]] || pkill -TERM -P "$p" 2>/dev/null || true; done
    fi
    wait
    exit 130
  }
  trap _gpu_stop INT TERM
  # Reaps slot $1 when its job has ended; true when the slot is free.
  _gpu_slot_free() {
    local job=${slot_job[$1]:-} rc
    [[ -z $job ]] && return 0
    [[ -f "$logs/$job.rc" ]] || return 1
    rc=$(<"$logs/$job.rc")
    rm -f "$logs/$job.rc"
    if [[ $rc == 0 ]]; then
      echo "== $job: done on GPU ${gpu_list[$1]}"
    else
      echo "== $job: FAILED on GPU ${gpu_list[$1]} (exit $rc); the end of $logs/$job.log:" >&2
      tail -n 5 "$logs/$job.log" >&2
      failed+=("$job")
    fi
    slot_job[$1]=""
    slot_pid[$1]=""
    return 0
  }
  for job in "$@"; do
    slot=""
    while [[ -z $slot ]]; do
      for i in "${!gpu_list[@]}"; do
        if _gpu_slot_free "$i"; then slot=$i; break; fi
      done
      [[ -n $slot ]] || sleep 2
    done
    rm -f "$logs/$job.rc"
    echo "== $job: on GPU ${gpu_list[$slot]} (CUDA_VISIBLE_DEVICES=${gpu_visible[$slot]}; log: $logs/$job.log)"
    (
      if CUDA_VISIBLE_DEVICES=${gpu_visible[$slot]} run_job "$job" >"$logs/$job.log" 2>&1; then rc=0; else rc=$?; fi
      echo "$rc" >"$logs/$job.rc"
    ) &
    slot_job[$slot]=$job
    slot_pid[$slot]=$!
  done
  for i in "${!gpu_list[@]}"; do
    until _gpu_slot_free "$i"; do sleep 2; done
  done
  trap - INT TERM
  if ((${#failed[@]})); then
    echo "${0##*/}: ${#failed[@]} run(s) failed: ${failed[*]}; fix the cause and run the same command again" \
         "(finished runs are kept)" >&2
    return 1
  fi
}
