#!/usr/bin/env bash
# One `gzsq quantize` job on a 224×224 model as a user runs it, its command and JSON report appended to a results
# file: `bash experiments/cli_224_runs.sh OUT.txt MODEL SEED ARGS...` (ARGS: e.g. --w-bits 6 --a-bits 6).
# One thread; the written ONNX file goes to a temporary folder.
set -u
cd "$(dirname "$0")/.."
out=$1 model=$2 seed=$3
shift 3
GZSQ=${GZSQ:-.venv/bin/gzsq}
weights=()
[ "$model" = mobilenet-v2 ] && weights=(--weights ../shared/models/imagenet/mobilenet_v2-b0353104.pth)
work=$(mktemp -d)
args=(quantize "$model" "${weights[@]}" -o "$work/$model-s$seed.onnx" "$@" --setting bn-free --calib gzsq --seed "$seed"
      --eval-data ../shared/data/imagenet-sample --threads 1 --json --force)
start=$(date +%s)
line=$($GZSQ "${args[@]}" 2>/dev/null | tail -1)
status=$?
{
  echo "\$ gzsq ${args[*]}" | sed "s#$work#WORK#g"
  echo "$line" | sed "s#$work#WORK#g"
  echo "(exit $status, wall $(( $(date +%s) - start )) s, code of commit $(git rev-parse --short HEAD))"
  echo
} >> "$out"
rm -rf "$work"
