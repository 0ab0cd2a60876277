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
# two side by side (one per core). A finished run returns at once and frees its slot, so a rerun
# after adding a variant trains two of the new runs at a time.
two_at_a_time() {
  local seeds=$1 seed v
  local -a fields
  shift
  for seed in $seeds; do
    for v in "$@"; do
      IFS='|' read -r -a fields <<< "$v"
      while (( $(jobs -rp | wc -l) >= 2 )); do wait -n || true; done
      job "$seed" "${fields[@]}" &
    done
  done
  wait || true
}
