# Shared by the experiment scripts (source it; MTL names the mtl-edge command). Runs resume: a run
# whose metrics.json exists is skipped, an unfinished one continues with --resume.

# train_once OUT TRAIN_ARGS...: one `mtl-edge train` into OUT, its output in OUT.log, its wall time printed.
train_once() {
  local out=$1 start=$SECONDS
  shift
  [[ -f "$out/metrics.json" ]] && return 0
  "$MTL" train "$@" --out "$out" $( [[ -d "$out" ]] && echo --resume ) > "$out.log" 2>&1 \
      || { echo "FAILED $out (see $out.log)"; return 1; }
  echo "$(basename "$out"): $((SECONDS - start)) s"
}

# two_at_a_time "SEEDS" VARIANT...: `job SEED FIELD...` for every seed and variant (fields split at |),
# two side by side (one per core).
two_at_a_time() {
  local seeds=$1 seed v
  local -a pending=() fields
  shift
  for seed in $seeds; do
    for v in "$@"; do
      IFS='|' read -r -a fields <<< "$v"
      job "$seed" "${fields[@]}" &
      pending+=($!)
      if (( ${#pending[@]} >= 2 )); then wait "${pending[0]}" || true; pending=("${pending[@]:1}"); fi
    done
  done
  wait || true
}
