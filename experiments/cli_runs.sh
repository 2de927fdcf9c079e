#!/usr/bin/env bash
# The CLI as a user runs it, outputs committed: results/cli_runs.txt (gzsq evaluate: real-image W8A8,
# gzsq W4A4 with round-to-nearest and with the default reconstruction) and results/cli_distill.txt
# (gzsq distill with the preview grid shown in the README, docs/distilled_resnet20.png).
# Run from the repository root with ../shared beside it, nothing else on the CPU.
set -u
cd "$(dirname "$0")/.."
GZSQ=.venv/bin/gzsq
R20="--model cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th --data ../shared/data/cifar10/test.npz"
run() {  # one command, its JSON line and its exit status
  echo "\$ gzsq $*"
  $GZSQ "$@" 2>/dev/null | tail -1
  echo "exit status: ${PIPESTATUS[0]}"
  echo
}
{
  run evaluate $R20 --calib real --calib-data ../shared/data/cifar10/train-jpeg.tar --json
  run evaluate $R20 --setting bn-free --calib gzsq --w-bits 4 --a-bits 4 --reconstruct none --json
  run evaluate $R20 --setting bn-free --calib gzsq --w-bits 4 --a-bits 4 --json
} > results/cli_runs.txt.tmp && mv results/cli_runs.txt.tmp results/cli_runs.txt
{
  cmd="distill cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th -o /tmp/resnet20_gzsq.npz --preview docs/distilled_resnet20.png --n-calib 64 --seed 0 --setting bn-free --threads 1 --force"
  echo "\$ gzsq $cmd"
  $GZSQ $cmd
} > results/cli_distill.txt.tmp 2>&1 && mv results/cli_distill.txt.tmp results/cli_distill.txt
