#!/usr/bin/env bash
# The fastest ResNet-50 our backends reach: each attempt through the real `ck run`, recorded as a point in $1.
# Usage: [BATCHES="1 256 1024"] benchmarks/fastest-resnet50.sh RESULTS_REPO   (then: python -m ck_plugins analyse ...)
set -u
repo=$(realpath "$1"); mkdir -p "$repo/logs"
batches=" ${BATCHES:-1 256 1024} "
attempt() {  # program lib batch [extra ck flags...]
  local program=$1 lib=$2 batch=$3; shift 3
  case "$batches" in *" $batch "*) ;; *) return ;; esac
  local tag="$lib-$batch$(printf '%s' "$*" | tr -c 'a-z0-9' '_')"
  ck run "program:$program" --env.CK_LIB="$lib" --env.CK_BATCH_SIZE="$batch" --env.CK_RESULTS_REPO="$repo" \
    --env.CK_PROFILE=false --env.CK_PER_LAYER=false --tmp_dir="/tmp/ckrun/$tag" \
    --treat_return_code_as_exit_code=yes "$@" > "$repo/logs/$tag.log" 2>&1
  echo "$lib batch $batch $* -> rc $? ($(grep -m1 -E 'ms/batch|FAILED' "$repo/logs/$tag.log"))"
}
# batch 1: latency
attempt bench-fp16 torch-cudnn-fp16 1 --env.CK_CUDA_GRAPH=true
attempt bench-compile torch-compile-fp16 1 --env.CK_COMPILE_MODE=reduce-overhead --env.CK_FREEZING=true
attempt bench-compile torch-compile-bf16 1 --env.CK_COMPILE_MODE=reduce-overhead --env.CK_FREEZING=true
# large batches: throughput
for batch in 256 1024; do
  attempt bench-fp16 torch-cudnn-fp16 "$batch" --env.CK_CUDA_GRAPH=true
  attempt bench-compile torch-compile-fp16 "$batch" --env.CK_FREEZING=true
  attempt bench-compile torch-compile-bf16 "$batch" --env.CK_FREEZING=true
done
attempt bench-compile torch-compile-fp16 1024 --env.CK_COMPILE_MODE=reduce-overhead --env.CK_FREEZING=true
