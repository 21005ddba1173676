#!/usr/bin/env bash
# The fastest ResNet-50 our backends reach, side by side in one run: each attempt through the real `ck run`
# (one process each, under a time limit), recorded as a point in $1; a failed or timed-out attempt is logged.
# QUICK=1 leaves out the max-autotune attempts (each compiles for minutes).
# Usage: [BATCHES="1 1024"] [LIMIT_S=300] [QUICK=1] benchmarks/fastest-resnet50.sh RESULTS_REPO
#        then: python -m ck_plugins analyse RESULTS_REPO ...
set -u
repo=$(realpath "$1"); mkdir -p "$repo/logs"
batches=" ${BATCHES:-1 1024} "
attempt() {  # program lib batch [extra ck flags...]
  local program=$1 lib=$2 batch=$3; shift 3
  case "$batches" in *" $batch "*) ;; *) return ;; esac
  local tag="$lib-$batch$(printf '%s' "$*" | tr -c 'a-z0-9' '_')"
  local start=$SECONDS
  timeout "${LIMIT_S:-300}" ck run "program:$program" --env.CK_LIB="$lib" --env.CK_BATCH_SIZE="$batch" \
    --env.CK_RESULTS_REPO="$repo" --env.CK_PROFILE=false --env.CK_PER_LAYER=false --tmp_dir="/tmp/ckrun/$tag" \
    --treat_return_code_as_exit_code=yes "$@" > "$repo/logs/$tag.log" 2>&1
  local rc=$?
  if [ $rc = 124 ]; then  # killed past the limit: the attempt is still a (failed) point
    (export CK_MEMORY_FORMAT=channels_last  # the fp16 and compile programs' default
     for flag in "$@"; do flag=${flag#--env.}; export "${flag%%=*}=${flag#*=}"; done
     python3 -m ck_plugins point --model resnet50 --lib "$lib" --batch-size "$batch" --repo "$repo" \
       --failed "timed out after ${LIMIT_S:-300} s (compilation included)" --out /dev/null >> "$repo/logs/$tag.log" 2>&1)
  fi
  echo "$lib batch $batch $* -> rc $rc in $((SECONDS - start)) s ($(grep -m1 -E 'ms/batch|FAILED' "$repo/logs/$tag.log"))"
}
for batch in 1 1024; do
  attempt bench-fp16 torch-cudnn-fp16 "$batch" --env.CK_CUDA_GRAPH=true
  attempt bench-fp16 torch-cudnn-fp16 "$batch" --env.CK_CUDA_GRAPH=true --env.CK_FOLD_BN=true
  attempt bench-compile torch-compile-fp16 "$batch" --env.CK_COMPILE_MODE=reduce-overhead --env.CK_FREEZING=true
  attempt bench-cudnn-graph cudnn-graph-fp16 "$batch"
  attempt bench-cudnn-graph cudnn-graph-fp8 "$batch"
done
attempt bench-compile torch-compile-fp16 1024 --env.CK_FREEZING=true
attempt bench-cudnn-graph cudnn-graph-fp16 1024  # again: its tuned plans now come from the plan cache
[ -n "${QUICK:-}" ] && exit 0
attempt bench-compile torch-compile-fp16 1 --env.CK_COMPILE_MODE=max-autotune --env.CK_FREEZING=true
attempt bench-compile torch-compile-fp16 1024 --env.CK_COMPILE_MODE=max-autotune-no-cudagraphs --env.CK_FREEZING=true
