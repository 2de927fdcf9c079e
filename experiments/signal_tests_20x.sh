#!/usr/bin/env bash
# The real-process signal tests (tests/test_interrupt.py: Ctrl-C during distillation, int8 calibration,
# evaluation and simulated calibration, SIGTERM during ONNX Runtime evaluation), 20 times in a row.
# Each line: the stage, the signal, the exit code and the seconds from the signal to the exit, then
# pytest's closing line. Writes results/signal_tests_20x.txt.
set -u
cd "$(dirname "$0")/.."
out=results/signal_tests_20x.txt
{
  echo "# bash experiments/signal_tests_20x.sh   ($(date -u +%F), $(nproc) CPU cores, other jobs running: $(uptime | sed 's/.*load/load/'))"
  for i in $(seq 20); do
    echo "## run $i"
    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/test_interrupt.py -k "ctrl_c or sigterm" 2>&1 \
      | grep -E "SIG(INT|TERM) -> exit|passed|failed|error"
  done
} > "$out.tmp" && mv "$out.tmp" "$out"
grep -c " passed" "$out" | sed 's/^/runs that passed: /'
