#!/usr/bin/env bash
# One call on the lent GPU machine: install the project beside the machine's torch, run the named phases,
# and leave every results repository as one tar in $OUT. Results go to /tmp/ckpb-results/<phase>/, outside the
# checkout: a warm machine keeps them for the next call (it mirrors the working tree into the checkout, removing
# what this side does not have), and a fresh one starts from a carried .gpu-results/ (the last call's tar, unpacked
# there), so a sweep or re-run cut by the call's limit resumes. Phases: parity, adaptive, sweep, rerun, fastest,
# networks, fused.
# With DETACH=1, sweep and rerun run in their own process session, which outlives the call on a warm machine: the
# call waits for it until CALL_LIMIT_S after the call began, and the next call's `wait` phase waits on (call again
# at once: an idle machine goes back within a minute). A whole sweep then runs in one part, whatever the call's limit.
# Usage (device tool, carry .whl and .gpu-results; .whl-cudnn, the cuDNN frontend wheel, for the cudnn-graph libs):
#   CKPB_COMMIT=<hash> benchmarks/on-gpu.sh parity adaptive
#   DETACH=1 benchmarks/on-gpu.sh sweep, then at once DETACH=1 benchmarks/on-gpu.sh wait rerun, then ... wait
set -u
[ -f /tmp/site/ck/kernel.py ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .whl/*.whl $(ls .whl-cudnn/*.whl 2>/dev/null) 2>&1 | grep -v "already exists" || true
PYTHONPATH=/tmp/site python3 -c "import ck" || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONWARNINGS=ignore::SyntaxWarning
export HOME=/tmp/h CK_REPOS=/tmp/h/CK PYTHONUNBUFFERED=1 TEARDOWN_CUPTI=1
mkdir -p "$HOME" && ck add repo --import --path="$PWD" --quiet > /dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader; echo "user $(id -u)"
results=/tmp/ckpb-results
if [ ! -d "$results" ] && [ -d .gpu-results ]; then cp -a .gpu-results "$results"; fi
mkdir -p "$results"
limit=$([ "${DETACH:-0}" = 1 ] && echo 1500 || echo 480)  # a sweep's own limit; detached, it may outlast a call
explore() {  # $1: sweep or rerun; $2: its time limit (s); the rest: explore's arguments. Detached: output to $1.log
  if [ "${DETACH:-0}" = 1 ]; then
    rm -f "$results/$1.rc"
    setsid bash -c 'timeout "$2" python3 -m ck_plugins explore "${@:3}" > "$1.log" 2>&1; echo $? > "$1.rc"' _ \
      "$results/$1" "$2" "${@:3}" < /dev/null > /dev/null 2>&1 &
    wait_detached "$1"
  else
    timeout "$2" python3 -m ck_plugins explore "${@:3}" 2>&1 | tr '\r' '\n' | grep -v 'point/s]$' | tail -8
  fi
}
wait_detached() {  # $1: sweep or rerun; waits for its detached run to end, until CALL_LIMIT_S into the call
  while [ ! -f "$results/$1.rc" ] && [ $SECONDS -lt "${CALL_LIMIT_S:-560}" ]; do sleep 2; done
  tr '\r' '\n' < "$results/$1.log" | grep -v 'point/s]$' | tail -6
  [ -f "$results/$1.rc" ] && echo "$1 ended: code $(cat "$results/$1.rc")" \
    || echo "$1 still running: call benchmarks/on-gpu.sh wait at once"
}
for phase in "$@"; do
  start=$SECONDS
  echo "=== $phase"
  case "$phase" in
    parity)  # its compilations go to a cache of their own: a sweep after it still starts cold
      TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python3 -m pytest -q tests/test_models.py tests/test_any_network.py \
        tests/test_compile_ahead.py 2>&1 | tail -4 ;;
    adaptive)
      python3 -m ck_plugins adaptive --batch-sizes "${ADAPTIVE_BATCHES:-16}" --repo "$results/adaptive"
      python3 -m ck_plugins adaptive --batch-sizes "${ADAPTIVE_GRAPH_BATCHES:-16,128}" --cuda-graph true \
        --repo "$results/adaptive" ;;
    sweep) explore sweep "${SWEEP_LIMIT_S:-$limit}" --config "${SWEEP_CONFIG:-default}" --device cuda \
        --repo "$results/sweep" ;;
    rerun)  # the same sweep again (RERUN_MODELS: part of it) into its own repository, with the caches left
      [ -d "$(python3 -c 'from ck_plugins import caches; print(caches.inductor())')" ] \
        || echo "warning: no inductor cache here (a fresh machine): this re-run starts cold, not warm"
      explore rerun "${RERUN_LIMIT_S:-$limit}" --config "${SWEEP_CONFIG:-default}" \
        ${RERUN_MODELS:+--models "$RERUN_MODELS"} --device cuda --repo "$results/rerun" ;;
    wait) for run in sweep rerun; do  # the detached runs still going, from an earlier call
        [ -f "$results/$run.log" ] && [ ! -f "$results/$run.rc" ] && wait_detached "$run"; done ;;
    fastest) timeout "${FASTEST_LIMIT_S:-540}" benchmarks/fastest-resnet50.sh "$results/fastest" ;;
    networks) timeout "${NETWORKS_LIMIT_S:-540}" benchmarks/any-network.sh "$results/networks" ;;
    fused) timeout "${FUSED_LIMIT_S:-540}" benchmarks/fused-seed-models.sh "$results/fused" ;;
    *) echo "unknown phase $phase: expected parity, adaptive, sweep, rerun, wait, fastest, networks or fused"
       exit 2 ;;
  esac
  echo "=== $phase: $((SECONDS - start)) s"
done
tar -C "$results" -czf "$OUT/gpu-results.tgz" .
