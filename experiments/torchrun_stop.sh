#!/bin/bash
# Under torchrun, Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and a rank that dies
# (SIGKILL to rank 1) each stop every rank, with one gzsq line, and leave nothing at the output path.
#   bash experiments/torchrun_stop.sh > results/torchrun_stop.txt
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=../shared/models/cifar10/resnet32.th
work=$(mktemp -d)
run() {  # $1: what to do 9 s after the start (ctrl-c | kill-rank-1)
  local repo=$PWD
  ( cd "$work" || exit 1
    setsid "$repo/$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m gzsq distill \
      cifar10-resnet32 --weights "$repo/$W" -o set.npz --threads 1 > out.txt 2> err.txt &
    echo $! > pid )
  sleep 9
  pid=$(cat "$work/pid")
  if [ "$1" = ctrl-c ]; then kill -INT -- -"$(ps -o pgid= "$pid" | tr -d ' ')"
  else kill -9 "$(pgrep -f 'gzsq distill cifar10-resnet32' | grep -v "^$pid$" | tail -1)"; fi
  t0=$(date +%s.%N)
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  echo "== $1: torchrun gone $(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.2f') s after the signal"
  echo "gzsq lines on stderr:"; grep '^gzsq' "$work/err.txt"
  echo "files left in the output folder: $(ls "$work" | grep -v -e '^out.txt$' -e '^err.txt$' -e '^pid$' | wc -l)"
  echo "torchrun's own summary: $(grep -c 'ChildFailedError\|SignalException' "$work/err.txt") line(s) naming its exception"
  rm -f "$work"/{out,err}.txt
}
echo "# bash experiments/torchrun_stop.sh   ($(date -u +%Y-%m-%d), torchrun --nproc-per-node 2, gloo, distill ResNet-32)"
run ctrl-c
run kill-rank-1
rm -rf "$work"
