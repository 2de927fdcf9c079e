#!/usr/bin/env bash
# The commands that produced results/ in this session (issues 2 and 3), in the order they ran, as
# chains run side by side on the 2-core machine (each `python` is resumable: rows already in its CSV
# are skipped, so re-running a chain only fills what is missing). Then:
#   python experiments/make_tables.py          # merges results/parts/*.csv into results/accuracy.csv
# Usage: bash experiments/run_all.sh baselines|distilled|bnfree|ablation|peers|speed|default|session4|rest
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
  peers)    # session 2: zeroq (bn) and the literal gzsq-paper preset, 500-step recipes (paused/killed when CPU ran out)
    O="--out results/parts/peers.csv"
    $R $O --models cifar10-resnet20 --calibs zeroq,gzsq-paper --seeds 0
    $R $O --models cifar10-resnet20-nf --calibs gzsq-paper --seeds 0
    $R $O --models cifar10-resnet20 --calibs zeroq,gzsq-paper --seeds 1,2
    $R $O --models cifar10-resnet32,cifar10-resnet44 --calibs zeroq,gzsq-paper --seeds 0
    ;;
  speed)    # session 2: speed levers of the then-default recipe (now `thorough`; variant names as renamed in
            # session 3: Lite0's 16-distilled-20-steps is exactly today's `default` there)
    $PY experiments/ablation.py --models efficientnet-lite0 --variants gaussian,default --seeds 0 --threads 1
    $PY experiments/ablation.py --models cifar10-resnet20 --variants thorough/128-distilled,thorough/20-steps,thorough --seeds 0,1,2 --threads 1
    # session 3: the BN-free net, where thorough lost to noise at W4A4
    $PY experiments/ablation.py --models cifar10-resnet20-nf --variants gaussian,thorough,thorough/coherence=0,thorough/128-distilled-20-steps,thorough/coherence=0/128-distilled-20-steps --seeds 0 --threads 1
    # session 3: which of the first fast default's two levers (128 of 256 images optimized, 20 steps) cost
    # ResNet-32 its W4A4 points: the images. So `default` became 256 images' worth of pixels x 20 steps
    $PY experiments/ablation.py --models cifar10-resnet32 --variants thorough/128-distilled-20-steps,thorough/128-distilled,thorough/20-steps --seeds 0 --threads 1
    ;;
  default)  # session 3: the fast default preset (20 steps on 256 CIFAR images' worth of pixels) replaces the
            # session-2 default, whose rows were relabelled gzsq-thorough (same recipe as the `thorough` preset).
            # (A first fast default, 128 images' worth, ran this chain too; its CIFAR rows are now the
            # gzsq-fast rows, results/parts/fast.csv. Lite0's recipe is the same under both: 16 images.)
    $R --out results/parts/distilled.csv --models cifar10-resnet20 --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/bnfree.csv --models cifar10-resnet20-nf --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/distilled.csv --models cifar10-resnet32,cifar10-resnet44 --calibs gzsq-default --seeds 0,1,2
    $R --out results/parts/distilled.csv --models efficientnet-lite0 --calibs gzsq-default --seeds 0
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian --seeds 1,2
    # (session 3 ended this chain during ResNet-44's real seed 2; its Gaussian seeds 1, 2 were then run alone:)
    $PY experiments/run_accuracy.py --threads 2 --models cifar10-resnet44 --calibs gaussian --seeds 1,2
    # and the recipe it replaced, on the seeds it lacked (not run in session 3)
    $R --out results/parts/distilled.csv --models cifar10-resnet32,cifar10-resnet44 --calibs gzsq-thorough --seeds 1,2
    ;;
  session4) # session 4: the distillation's statistics became one fused autograd Function and the loop runs
            # channels-last (same math, other float rounding), so the default's rows were re-run (the old ones
            # are in results/superseded/); then the peers and the missing seeds, as chains side by side
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
  rest)     # the rest of the issue-2/3 grid, not run for lack of CPU time (finished rows are skipped)
    $R --models efficientnet-lite0 --calibs real,gaussian,uniform --seeds 0,1,2
    $R --models cifar10-resnet32,cifar10-resnet44 --calibs real,gaussian,uniform --seeds 0,1,2
    $R --out results/parts/distilled.csv --models cifar10-resnet20,cifar10-resnet32,cifar10-resnet44,efficientnet-lite0 \
       --calibs gzsq-default,gzsq-thorough,zeroq,gzsq-paper --seeds 0,1,2
    $R --out results/parts/bnfree.csv --models cifar10-resnet20-nf --calibs real,gaussian,uniform,gzsq-default,gzsq-paper --seeds 0,1,2
    $PY experiments/ablation.py --models efficientnet-lite0 --threads 1
    ;;
  *) echo "usage: $0 baselines|distilled|bnfree|ablation|peers|speed|default|session4|rest" >&2; exit 2 ;;
esac
