#!/usr/bin/env bash
# The rows of results/ablation_bnfree.md (BN-free CIFAR nets, 3 seeds, all 10 000 test images), in the order run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
A="$PY experiments/ablation.py --out results/ablation_bnfree --seeds 0,1,2 --threads 1 --bits W8A8,W6A6,W4A8,W4A4"
for v in gaussian,real,default,default/noise-half default/percentile,default/mse default/40-steps default/noise-quarter; do
  for m in cifar10-vgg7-nf cifar10-resnet20-nf; do
    $A --models $m --variants $v
  done
done
for m in cifar10-vgg7-nf cifar10-resnet20-nf; do
  $A --models $m --variants default/local
done
# the reconstruction job's image recipe (half local, half propagated) with round to nearest at W6A6 only:
$PY experiments/ablation.py --out results/ablation_bnfree --seeds 0,1,2 --threads 1 --bits W6A6 \
  --models cifar10-resnet32-nf,cifar10-resnet20-nf,cifar10-vgg7-nf --variants default/half-local
