#!/usr/bin/env bash
# The precision table (every precision and layout, with the why) for networks the project does not define, through
# the real `ck run program:precision-bench`, each mode recorded as a point in $1; one table per (model, batch).
# Repetitions last at least 200 ms so that NVML's energy counter resolves each point's energy.
# Usage: [MODELS="torchvision:resnet18 ..."] [BATCHES="1 16 256"] benchmarks/any-network.sh RESULTS_REPO
set -u
repo=$(realpath "$1"); mkdir -p "$repo/logs" "$repo/tables"
models=${MODELS:-torchvision:resnet18 torchvision:mobilenet_v3_large torchvision:efficientnet_b0 torchvision:convnext_tiny torchvision:vit_b_16}
for model in $models; do
  for batch in ${BATCHES:-1 16 256}; do
    name=$(printf '%s' "$model-bs$batch" | tr -c 'A-Za-z0-9_.-' '-')
    start=$SECONDS
    ck run program:precision-bench --env.CK_MODEL="$model" --env.CK_BATCH_SIZE="$batch" --env.CK_DEVICE=cuda \
      --env.CK_MIN_REPETITION_MS=200 --env.CK_RECORD=true --env.CK_RESULTS_REPO="$repo" --tmp_dir="/tmp/ckrun/$name" \
      --treat_return_code_as_exit_code=yes > "$repo/logs/$name.log" 2>&1
    rc=$?
    cp "/tmp/ckrun/$name/result.json" "$repo/tables/$name.json" 2>/dev/null
    echo "$model batch $batch -> rc $rc in $((SECONDS - start)) s"
  done
done
