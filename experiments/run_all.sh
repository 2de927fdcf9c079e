#!/usr/bin/env bash
# The commands that produced the accuracy grid and ablations in results/, in the order they ran, as
# chains run side by side on a 2-core CPU (each `python` is resumable: rows already in its CSV are
# skipped, so re-running a chain only fills what is missing). Then:
#   python experiments/make_tables.py          # merges results/parts/*.csv into results/accuracy.csv
# Usage: bash experiments/run_all.sh baselines|distilled|bnfree|ablation|peers|speed|default|default-rerun|rest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R="$PY experiments/run_accuracy.py --threads 1"
case "${1:-}" in
  baselines)
    $R --models cifar10-resnet20 --calibs real,gaussian,uniform --seeds 0,1,2
    $R --models efficientnet-lite0 --calibs real --seeds 0
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian --seeds 0
    ;;
  distilled)
    O="--out results/parts/distilled.csv"
    $R $O --models cifar10-resnet20 --calibs gzsq-default --seeds 0,1,2
    $R $O --models cifar10-resnet32,cifar10-resnet44,efficientnet-lite0 --calibs gzsq-default --seeds 0
    ;;
  bnfree)   # after experiments/train_bnfree_resnet.py --epochs 8 --seed 0 --threads 1
    O="--out results/parts/bnfree.csv"
    $R $O --models cifar10-resnet20-nf --calibs real,gaussian,gzsq-default --seeds 0
    $R $O --models cifar10-resnet20-nf --calibs gaussian,gzsq-default,real --seeds 1,2
    ;;
  ablation)
    $PY experiments/ablation.py --models cifar10-resnet20 --threads 1
    ;;
  peers)    # zeroq (bn) and the literal gzsq-paper preset, 500-step recipes (some stopped when CPU time ran out)
    O="--out results/parts/peers.csv"
    $R $O --models cifar10-resnet20 --calibs zeroq,gzsq-paper --seeds 0
    $R $O --models cifar10-resnet20-nf --calibs gzsq-paper --seeds 0
    $R $O --models cifar10-resnet20 --calibs zeroq,gzsq-paper --seeds 1,2
    $R $O --models cifar10-resnet32,cifar10-resnet44 --calibs zeroq,gzsq-paper --seeds 0
    ;;
  speed)    # speed levers of the `thorough` recipe (Lite0's 16-distilled-20-steps is exactly `default` there)
    $PY experiments/ablation.py --models efficientnet-lite0 --variants gaussian,default --seeds 0 --threads 1
    $PY experiments/ablation.py --models cifar10-resnet20 --variants thorough/128-distilled,thorough/20-steps,thorough --seeds 0,1,2 --threads 1
    # the BN-free net, where thorough lost to noise at W4A4
    $PY experiments/ablation.py --models cifar10-resnet20-nf --variants gaussian,thorough,thorough/coherence=0,thorough/128-distilled-20-steps,thorough/coherence=0/128-distilled-20-steps --seeds 0 --threads 1
    # which of the `fast` recipe's two levers (128 of 256 images optimized, 20 steps) costs ResNet-32 its
    # W4A4 points: the images. So `default` optimizes 256 images' worth of pixels for 20 steps
    $PY experiments/ablation.py --models cifar10-resnet32 --variants thorough/128-distilled-20-steps,thorough/128-distilled,thorough/20-steps --seeds 0 --threads 1
    ;;
  default)  # the `default` preset (20 steps on 256 CIFAR images' worth of pixels), plus real/gaussian seeds.
            # (The `fast` preset, 128 images' worth, ran this chain too under the name gzsq-default; its CIFAR
            # rows are the gzsq-fast rows, results/parts/fast.csv. Lite0's recipe is the same under both.)
    $R --out results/parts/distilled.csv --models cifar10-resnet20 --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/bnfree.csv --models cifar10-resnet20-nf --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/distilled.csv --models cifar10-resnet32,cifar10-resnet44 --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/distilled.csv --models efficientnet-lite0 --calibs gzsq-default --seeds 0
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian --seeds 1,2
    # (this chain was stopped during ResNet-44's real seed 2; its Gaussian seeds 1, 2 were then run alone:)
    $PY experiments/run_accuracy.py --threads 2 --models cifar10-resnet44 --calibs gaussian --seeds 1,2
    # and the `thorough` recipe on the seeds it lacked
    $R --out results/parts/distilled.csv --models cifar10-resnet32,cifar10-resnet44 --calibs gzsq-thorough --seeds 1,2
    ;;
  default-rerun) # the default's rows again after the distillation's statistics became one fused autograd
            # Function and the loop ran channels-last (same math, other float rounding; the old rows are in
            # results/superseded/); then the peers and the missing seeds, as chains side by side
    $R --out results/parts/distilled.csv --models cifar10-resnet20,cifar10-resnet32 --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/distilled.csv --models efficientnet-lite0 --calibs gzsq-default --seeds 0
    $R --out results/parts/bnfree.csv --models cifar10-resnet20-nf --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/default44.csv --models cifar10-resnet44 --calibs gzsq-default --seeds 0,1,2
    $PY experiments/paper_ranges.py --threads 1
    $PY experiments/ablation.py --models efficientnet-lite0 --seeds 0 --threads 1
    $R --out results/parts/fill.csv --models efficientnet-lite0 --calibs real,gaussian --seeds 1,2
    $R --out results/parts/fill.csv --models efficientnet-lite0 --calibs uniform --seeds 1
    $PY experiments/run_accuracy.py --threads 2 --out results/parts/fill.csv --models efficientnet-lite0 --calibs gzsq-default --seeds 1,2
    $R --out results/parts/real44.csv --models cifar10-resnet44 --calibs real --seeds 2
    $R --out results/parts/peers.csv --models cifar10-resnet32,cifar10-resnet44 --calibs zeroq,gzsq-paper --seeds 0
    $R --out results/parts/peers.csv --models cifar10-resnet20-nf --calibs gzsq-paper --seeds 1,2
    $R --out results/parts/peers.csv --models cifar10-resnet32 --calibs zeroq,gzsq-paper --seeds 1,2
    ;;
  rest)     # the rest of the grid, not run for lack of CPU time (finished rows are skipped)
    $R --models efficientnet-lite0 --calibs real,gaussian,uniform --seeds 0,1,2
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian,uniform --seeds 0,1,2
    $R --out results/parts/distilled.csv --models cifar10-resnet20,cifar10-resnet32,cifar10-resnet44,efficientnet-lite0 \
       --calibs gzsq-default,gzsq-thorough,zeroq,gzsq-paper --seeds 0,1,2
    $R --out results/parts/bnfree.csv --models cifar10-resnet20-nf --calibs real,gaussian,uniform,gzsq-default,gzsq-paper --seeds 0,1,2
    $PY experiments/ablation.py --models efficientnet-lite0 --threads 1
    ;;
  *) echo "usage: $0 baselines|distilled|bnfree|ablation|peers|speed|default|default-rerun|rest" >&2; exit 2 ;;
esac
