#!/usr/bin/env bash
# The fused cuDNN-graph engine beside torch.compile with frozen weights on the four other seed models, at batch
# 16 and 256, each through the real `ck run` (one process each, under a time limit), recorded as points in $1.
# Usage: [LIMIT_S=240] [MODELS="alexnet googlenet"] benchmarks/fused-seed-models.sh RESULTS_REPO
set -u
repo=$(realpath "$1"); mkdir -p "$repo/logs"
for model in ${MODELS:-alexnet googlenet squeezenet-1.0 squeezenet-1.1}; do
  for batch in 16 256; do
    for attempt in "bench-cudnn-graph cudnn-graph-fp16" "bench-compile torch-compile-fp16 --env.CK_FREEZING=true"; do
      set -- $attempt; program=$1 lib=$2; shift 2
      log="$repo/logs/$model-$lib-$batch.log"
      timeout "${LIMIT_S:-240}" ck run "program:$program" --env.CK_MODEL="$model" --env.CK_LIB="$lib" \
        --env.CK_BATCH_SIZE="$batch" --env.CK_RESULTS_REPO="$repo" --tmp_dir="/tmp/ckrun/$model-$lib-$batch" \
        --treat_return_code_as_exit_code=yes "$@" > "$log" 2>&1
      echo "$model $lib batch $batch -> rc $? ($(grep -m1 -E 'ms/batch|FAILED' "$log"))"
    done
  done
done
