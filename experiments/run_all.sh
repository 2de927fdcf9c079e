#!/usr/bin/env bash
# The commands that produced results/ (issues 2 and 3), in priority order, as three chains that
# can run side by side on a 2-core machine. Every step is resumable (finished rows are skipped).
#   bash experiments/run_all.sh baselines | distilled | bnfree | ablation ; then
#   python experiments/make_tables.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R="$PY experiments/run_accuracy.py --threads 1"
case "${1:-}" in
  baselines)
    $R --models cifar10-resnet20,efficientnet-lite0 --calibs real,gaussian,uniform --seeds 0,1,2
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian,uniform --seeds 0
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian,uniform --seeds 1,2
    ;;
  distilled)
    O="--out results/parts/distilled.csv"
    $R $O --models cifar10-resnet20 --calibs gzsq-default --seeds 0,1,2
    $R $O --models cifar10-resnet32,cifar10-resnet44,efficientnet-lite0 --calibs gzsq-default --seeds 0
    $R $O --models cifar10-resnet20,cifar10-resnet32,cifar10-resnet44,efficientnet-lite0 --calibs zeroq,gzsq-paper --seeds 0
    $R $O --models cifar10-resnet32,cifar10-resnet44,efficientnet-lite0 --calibs gzsq-default --seeds 1,2
    $R $O --models cifar10-resnet20 --calibs zeroq,gzsq-paper --seeds 1,2
    ;;
  bnfree)
    O="--out results/parts/bnfree.csv"
    $R $O --models cifar10-resnet20-nf --calibs real,gaussian,gzsq-default --seeds 0,1,2
    $R $O --models cifar10-resnet20-nf --calibs uniform,gzsq-paper --seeds 0,1,2
    ;;
  ablation)
    $PY experiments/ablation.py --models cifar10-resnet20 --threads 1
    $PY experiments/ablation.py --models efficientnet-lite0 --threads 1 \
        --variants real,gaussian,paper,default,default/loss=z,default/no-relu-aware
    ;;
  *) echo "usage: $0 baselines|distilled|bnfree|ablation" >&2; exit 2 ;;
esac
