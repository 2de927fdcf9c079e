#!/usr/bin/env bash
# The rows of results/ablation_w6a6.md: round to nearest at W6A6 on the BN-trained CIFAR ResNets (bn-free
# setting, 3 seeds, all 10 000 test images): does the `mixed` or `local` recipe that serves the never-normalized
# ResNet-32 there also serve them? The rows were made by two processes side by side, one thread each, into
# two CSVs (out stems ..._a and ..._b) that were then concatenated; run one after the other as here, the
# resumable CSV gives the same rows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
A="$PY experiments/ablation.py --out results/ablation_w6a6 --seeds 0,1,2 --threads 1 --bits W6A6"
V=gaussian,real,default,default/noise-half,default/local
$A --models cifar10-resnet20,cifar10-resnet32 --variants $V
$A --models cifar10-resnet44 --variants $V
# then the reconstruction job's image recipe, half local / half propagated, with round to nearest at W6A6:
$A --models cifar10-resnet20,cifar10-resnet32,cifar10-resnet44 --variants default/half-local
