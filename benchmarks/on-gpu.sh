#!/usr/bin/env bash
# One call on the lent GPU machine: install the project beside the machine's torch, run the named phases,
# and leave every results repository as one tar in $OUT. Results go to /tmp/ckpb-results/<phase>/, outside the
# checkout: a warm machine keeps them for the next call (it mirrors the working tree into the checkout, removing
# what this side does not have), and a fresh one starts from a carried .gpu-results/ (the last call's tar, unpacked
# there), so a sweep or re-run cut by the call's limit resumes. Phases: parity, adaptive, sweep, rerun, fastest,
# networks, fused.
# Usage (device tool, carry .whl and .gpu-results; .whl-cudnn, the cuDNN frontend wheel, for the cudnn-graph libs):
#   CKPB_COMMIT=<hash> benchmarks/on-gpu.sh parity adaptive
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  $(ls .whl-cudnn/*.whl 2>/dev/null) 2>&1 | grep -v "already exists" || true
PYTHONPATH=/tmp/site python3 -c "import ck" || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONWARNINGS=ignore::SyntaxWarning
export HOME=/tmp/h CK_REPOS=/tmp/h/CK PYTHONUNBUFFERED=1 TEARDOWN_CUPTI=1
mkdir -p "$HOME" && ck add repo --import --path="$PWD" --quiet > /dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader
results=/tmp/ckpb-results
if [ ! -d "$results" ] && [ -d .gpu-results ]; then cp -a .gpu-results "$results"; fi
mkdir -p "$results"
for phase in "$@"; do
  start=$SECONDS
  echo "=== $phase"
  case "$phase" in
    parity) python3 -m pytest -q tests/test_models.py tests/test_any_network.py tests/test_compile_ahead.py 2>&1 | tail -4 ;;
    adaptive)
      python3 -m ck_plugins adaptive --batch-sizes "${ADAPTIVE_BATCHES:-16}" --repo "$results/adaptive"
      python3 -m ck_plugins adaptive --batch-sizes "${ADAPTIVE_GRAPH_BATCHES:-16,128}" --cuda-graph true \
        --repo "$results/adaptive" ;;
    sweep) timeout "${SWEEP_LIMIT_S:-480}" python3 -m ck_plugins explore --config "${SWEEP_CONFIG:-default}" \
        --device cuda --repo "$results/sweep" 2>&1 | tr '\r' '\n' | grep -v 'point/s]$' | tail -8 ;;
    rerun)  # the same sweep again (RERUN_MODELS: part of it) into its own repository, with the caches left
      [ -d "$(python3 -c 'from ck_plugins import caches; print(caches.inductor())')" ] \
        || echo "warning: no inductor cache here (a fresh machine): this re-run starts cold, not warm"
      timeout "${RERUN_LIMIT_S:-480}" python3 -m ck_plugins explore --config "${SWEEP_CONFIG:-default}" \
        ${RERUN_MODELS:+--models "$RERUN_MODELS"} --device cuda --repo "$results/rerun" 2>&1 | tr '\r' '\n' \
        | grep -v 'point/s]$' | tail -8 ;;
    fastest) timeout "${FASTEST_LIMIT_S:-540}" benchmarks/fastest-resnet50.sh "$results/fastest" ;;
    networks) timeout "${NETWORKS_LIMIT_S:-540}" benchmarks/any-network.sh "$results/networks" ;;
    fused) timeout "${FUSED_LIMIT_S:-540}" benchmarks/fused-seed-models.sh "$results/fused" ;;
    *) echo "unknown phase $phase: expected parity, adaptive, sweep, rerun, fastest, networks or fused"; exit 2 ;;
  esac
  echo "=== $phase: $((SECONDS - start)) s"
done
tar -C "$results" -czf "$OUT/gpu-results.tgz" .
