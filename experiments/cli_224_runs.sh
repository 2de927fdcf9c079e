#!/usr/bin/env bash
# One `gzsq quantize` job as a user runs it, its command and JSON report appended to a results file:
# `bash experiments/cli_224_runs.sh OUT.txt MODEL SEED ARGS...` (ARGS: e.g. --w-bits 6 --a-bits 6). 224×224 models
# are evaluated on the 500-image ImageNet sample, CIFAR-10 nets on all 10 000 test images (their weights from
# ../shared/models/cifar10/; the -nf nets load by name). One thread; the ONNX file goes to a temporary folder.
set -u -o pipefail
cd "$(dirname "$0")/.."
out=$1 model=$2 seed=$3
shift 3
GZSQ=${GZSQ:-.venv/bin/gzsq}
weights=() data=../shared/data/imagenet-sample
case $model in
  mobilenet-v2) weights=(--weights ../shared/models/imagenet/mobilenet_v2-b0353104.pth) ;;
  cifar10-resnet20|cifar10-resnet32|cifar10-resnet44) weights=(--weights "../shared/models/cifar10/${model#cifar10-}.th") ;;
esac
case $model in cifar10-*) data=../shared/data/cifar10/test.npz ;; esac
work=$(mktemp -d)
args=(quantize "$model" "${weights[@]}" -o "$work/$model-s$seed.onnx" "$@" --setting bn-free --calib gzsq --seed "$seed"
      --eval-data "$data" --threads 1 --json --force)
# the commit of the gzsq package the command imports (PYTHONPATH may point at another checkout's src/)
src=$("$(dirname "$GZSQ")/python" -c 'import gzsq, os; print(os.path.dirname(gzsq.__file__))' 2>/dev/null)
code=$(git -C "${src:-.}" rev-parse --short HEAD 2>/dev/null || echo unknown)
start=$(date +%s)
line=$($GZSQ "${args[@]}" 2>/dev/null | tail -1)
status=$?
{
  echo "\$ gzsq ${args[*]}" | sed "s#$work#WORK#g"
  echo "$line" | sed "s#$work#WORK#g"
  echo "(exit $status, wall $(( $(date +%s) - start )) s, code of commit $code)"
  echo
} >> "$out"
rm -rf "$work"
