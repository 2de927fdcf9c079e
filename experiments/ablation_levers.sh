#!/usr/bin/env bash
# The lever rows of results/ablation_levers.md, in the order they were run (each line resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
A="$PY experiments/ablation.py --out results/ablation_levers --seeds 0,1,2 --threads 1"
for m in efficientnet-lite0 mobilenet-v2; do
  $A --models $m --variants gaussian,default,default/dw-coherence=0.5
done
for m in efficientnet-lite0 mobilenet-v2; do
  $A --models $m --variants real,real/percentile
done
for m in efficientnet-lite0 mobilenet-v2; do
  $A --models $m --variants default/32-distilled  # distill_images=32 (a first run sized it by pixels: still 16 at 224²)
done
for m in efficientnet-lite0 mobilenet-v2; do
  $A --models $m --variants default/40-steps
done
for m in efficientnet-lite0 mobilenet-v2; do  # preset mixed's recipe (half the set left as noise), run with --threads 2
  $A --models $m --variants default/noise-half
done
for m in efficientnet-lite0 mobilenet-v2; do  # local targets (= preset local, what preset auto picks on these two)
  $A --models $m --variants default/local
done
