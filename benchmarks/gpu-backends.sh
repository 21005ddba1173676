#!/usr/bin/env bash
# Every GPU backend on ResNet-50 through the real `ck run`, points recorded into the results repository $1.
# Usage: benchmarks/gpu-backends.sh RESULTS_REPO eager|compile   (then: python benchmarks/compare_anchors.py RESULTS_REPO)
set -u
repo=$(realpath "$1"); which=$2
mkdir -p "$repo/logs"
run() {  # program lib batch [extra ck flags...]
  local program=$1 lib=$2 batch=$3; shift 3
  local tag="$lib-$batch$(printf '%s' "$*" | tr -c 'a-z0-9' '_')"
  ck run "program:$program" --env.CK_LIB="$lib" --env.CK_BATCH_SIZE="$batch" --env.CK_RESULTS_REPO="$repo" \
    --tmp_dir="/tmp/ckrun/$tag" --treat_return_code_as_exit_code=yes "$@" > "$repo/logs/$tag.log" 2>&1
  echo "$lib batch $batch $* -> rc $? ($(grep -m1 -E 'ms/batch|FAILED' "$repo/logs/$tag.log"))"
}
if [ "$which" = eager ]; then
  for batch in 16 256; do
    run bench-cublas torch-cublas-fp32 "$batch"; run bench-cublas torch-cublas-fp16 "$batch"
    run bench-cudnn torch-cudnn-fp32 "$batch"; run bench-cudnn torch-cudnn-tf32 "$batch"
    run bench-fp16 torch-cudnn-fp16 "$batch"; run bench-fp16 torch-cudnn-bf16 "$batch"
    run bench-fp16 torch-amp "$batch" --env.CK_MEMORY_FORMAT=nchw
    run bench-fp16 torch-cudnn-fp16 "$batch" --env.CK_CUDA_GRAPH=true
  done
  run bench-fp16 torch-cudnn-fp16 1
else
  for batch in 16 256; do
    run bench-compile torch-compile-fp32 "$batch"; run bench-compile torch-compile-fp16 "$batch"
    run bench-compile torch-compile-bf16 "$batch"
    run bench-tensorrt tensorrt-fp32 "$batch"; run bench-tensorrt tensorrt-fp16 "$batch"
  done
fi
