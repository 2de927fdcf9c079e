#!/usr/bin/env bash
# CI's run, N times in a row (default 5): each time a fresh clone of HEAD beside this checkout (so that
# ../shared is where the tests expect it), `CI=true bash .ci/run` in it, and pytest's closing line with
# the exit status. Writes results/ci_runs.txt; each run's whole log stays in /tmp/gzsq-ci-run-K.log.
set -u
cd "$(dirname "$0")/.."
n=${1:-5}
out=results/ci_runs.txt
clone=../gzsq-ci-check
{
  echo "# bash experiments/ci_runs.sh $n   (commit $(git rev-parse --short HEAD), $(date -u +%F), $(nproc) CPU cores)"
  for k in $(seq "$n"); do
    rm -rf "$clone"
    git clone -q . "$clone"
    start=$(date +%s)
    (cd "$clone" && CI=true bash .ci/run) > "/tmp/gzsq-ci-run-$k.log" 2>&1 < /dev/null
    status=$?
    echo "run $k (commit $(git -C "$clone" rev-parse --short HEAD)): exit $status after $(( $(date +%s) - start )) s: $(grep -E '^[0-9]+ (passed|failed)|(passed|failed).* in [0-9.]+s' "/tmp/gzsq-ci-run-$k.log" | tail -1)"
  done
  rm -rf "$clone"
} > "$out.tmp" && mv "$out.tmp" "$out"
cat "$out"
