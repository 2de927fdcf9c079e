"""The whole low-bit job's time: `gzsq quantize cifar10-resnet20 --w-bits 4 --a-bits 4` with block
reconstruction (the default below 8 bits) beside round-to-nearest (`--reconstruct none`), median of 3.

    python benchmarks/lowbit_speed.py             # → benchmarks/results/lowbit_speed.txt

Each run is the real command line (distillation + ranges + reconstruction + ONNX export, no evaluation),
torch on the CPU's cores; the two variants alternate so that machine noise hits both alike. The file
records the machine's load before each run: the goal (the whole job in ≤ 120 s on 2 cores) is meant for
an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT.parent / "shared" / "models/cifar10/resnet20.th"
OUT = ROOT / "benchmarks" / "results" / "lowbit_speed.txt"
REPEATS = 3


def main() -> None:
    lines = [f"# {__doc__.splitlines()[0]}", f"# command: python benchmarks/lowbit_speed.py ({time.strftime('%Y-%m-%d')})",
             f"# CPU cores: {os.cpu_count()}, torch threads: the CPU's cores (no --threads)", ""]
    runs: dict[str, list[float]] = {"block": [], "none": []}
    stages: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        for rep in range(REPEATS):
            for method in ("block", "none"):
                out = Path(work) / f"r20-w4a4-{method}-{rep}.onnx"
                load = os.getloadavg()[0]
                cmd = [sys.executable, "-m", "gzsq", "quantize", "cifar10-resnet20", "--weights", str(WEIGHTS),
                       "-o", str(out), "--w-bits", "4", "--a-bits", "4", "--reconstruct", method, "--json", "-q"]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                seconds = time.perf_counter() - t
                if proc.returncode != 0:
                    raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
                report = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[method].append(seconds)
                stages.setdefault(method, report["seconds"])
                lines.append(f"--reconstruct {method}, run {rep + 1}: load before {load:.2f}; whole command "
                             f"{seconds:.1f} s; stages {report['seconds']}")
    lines += ["", "| W4A4 ResNet-20 | whole command, median of 3 | goal ≤ 120 s |", "| --- | --- | --- |"]
    for method, label in (("block", "block reconstruction (default)"), ("none", "round to nearest")):
        median = statistics.median(runs[method])
        lines.append(f"| {label} | {median:.1f} s | {'met' if median <= 120 else 'not met'} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
