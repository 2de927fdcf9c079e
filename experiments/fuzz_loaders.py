"""Fuzz every loader gzsq has with 10 000+ generated inputs and count what happened.

    python -m experiments.fuzz_loaders                 # 10 200 inputs, writes results/fuzz_loaders.txt
    python -m experiments.fuzz_loaders --total 600 --out /tmp/f.txt

Targets, strategies and the pass rule are in tests/fuzz_harness.py: every input must give a
result or a GzsqError (a clean one-line error); anything else is a crash, printed with the
input that caused it (saved under results/fuzz_crashes/). Hypothesis generates the inputs,
derandomized, so a rerun generates the same ones. Exit status 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from gzsq.atomic import atomic_write_bytes, atomic_write_text
from tests.fuzz_harness import TARGETS, outcome

ROOT = Path(__file__).resolve().parents[1]

# share of the inputs per loader: the checkpoint reader faces the internet, so it gets the most
SHARES = {"checkpoint": 3, "dataset-npz": 2, "dataset-labels.csv": 1.5, "dataset-tar": 2, "calibration-set-npz": 1,
          "distill-checkpoint": 0.7, "onnx": 2}


def fuzz(target: str, n: int, crash_dir: Path) -> dict:
    counts, crashes, messages = collections.Counter(), [], []
    strategy, _ = TARGETS[target]

    @settings(max_examples=n, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy())
    def one(data: bytes):
        counts["inputs"] += 1
        try:
            result = outcome(target, data, messages)
        except Exception as exc:  # a crash: record it and go on (no shrinking; the input is saved)
            counts["CRASH"] += 1
            path = crash_dir / f"{target}-{len(crashes)}.bin"
            atomic_write_bytes(path, data)
            crashes.append(f"{type(exc).__name__}: {str(exc)[:200]} (input {path.relative_to(ROOT)}) "
                           f"at {traceback.extract_tb(exc.__traceback__)[-1].filename.split('/')[-1]}")
            return
        counts[result] += 1

    t = time.perf_counter()
    one()
    kinds = collections.Counter(_kind(m) for m in messages)
    return {"counts": counts, "crashes": crashes, "seconds": time.perf_counter() - t, "kinds": kinds}


def _kind(message: str) -> str:
    """An error message without the parts that vary per input (paths, numbers, quoted names, tails)."""
    m = re.sub(r"<dir>\S*", "<file>", message)
    m = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", m)
    m = re.sub(r"\(.*", "(…", m)
    m = re.sub(r"\d+", "N", m)
    return m[:90]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--total", type=int, default=10_200, help="inputs over all loaders (default: 10 200)")
    p.add_argument("--out", type=Path, default=ROOT / "results/fuzz_loaders.txt")
    p.add_argument("--show", type=int, default=8, help="error kinds listed per loader (default: 8)")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of: " + ", ".join(TARGETS))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    targets = args.targets.split(",")
    weight = sum(SHARES[t] for t in targets)
    crash_dir = ROOT / "results/fuzz_crashes"
    lines = [f"# python -m experiments.fuzz_loaders --total {args.total}",
             "# every input must give a result (ok) or a GzsqError subclass; anything else is a CRASH",
             "", f"{'loader':22s} {'inputs':>7s} {'ok':>6s}  clean errors (GzsqError subclasses){'':14s} crashes  seconds"]
    total_inputs = total_crashes = 0
    all_crashes, details = [], []
    for target in targets:
        n = round(args.total * SHARES[target] / weight)
        r = fuzz(target, n, crash_dir)
        c = r["counts"]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("inputs", "ok", "CRASH")) or "-"
        line = f"{target:22s} {c['inputs']:7d} {c['ok']:6d}  {errors:50s} {c['CRASH']:7d}  {r['seconds']:7.1f}"
        print(line, flush=True)
        lines.append(line)
        total_inputs += c["inputs"]
        total_crashes += c["CRASH"]
        all_crashes += [f"{target}: {msg}" for msg in r["crashes"]]
        details.append(f"{target}: {len(r['kinds'])} different clean errors, the most frequent:")
        details += [f"  {v:5d}  {k}" for k, v in r["kinds"].most_common(args.show)]
    lines += ["", f"total: {total_inputs} inputs, {total_crashes} crashes"] + all_crashes
    print("\n".join(lines[-1 - len(all_crashes):]))
    lines += ["", "# which clean errors the inputs reached (messages with paths and numbers blanked)"] + details
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
