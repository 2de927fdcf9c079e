"""The whole low-bit job's time, block reconstruction (the default below 8 bits) beside round-to-nearest
(`--reconstruct none`), median of 3:

    python benchmarks/lowbit_speed.py                 # ResNet-20 W4A4 → benchmarks/results/lowbit_speed.txt
    python benchmarks/lowbit_speed.py --model lite0   # EfficientNet-Lite0 W4A8 → .../lowbit_speed_lite0.txt

Each run is the real command line (distillation + ranges + reconstruction + ONNX export, no evaluation),
torch on the CPU's cores; the two variants alternate so that machine noise hits both alike. The file
records the machine's load before each run: the goals (ResNet-20 W4A4 in ≤ 120 s, Lite0 W4A8 in ≤ 20 min,
on 2 cores) are meant for an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3
# name → (label, gzsq quantize arguments before -o, goal in seconds, output file)
JOBS = {
    "resnet20": ("W4A4 ResNet-20",
                 ["cifar10-resnet20", "--weights", str(ROOT.parent / "shared" / "models/cifar10/resnet20.th"),
                  "--w-bits", "4", "--a-bits", "4"], 120, "lowbit_speed.txt"),
    "lite0": ("W4A8 EfficientNet-Lite0", ["efficientnet-lite0", "--w-bits", "4", "--a-bits", "8"], 1200,
              "lowbit_speed_lite0.txt"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(JOBS), default="resnet20")
    args = p.parse_args()
    label, job, goal, filename = JOBS[args.model]
    out_file = ROOT / "benchmarks" / "results" / filename
    command = "python benchmarks/lowbit_speed.py" + ("" if args.model == "resnet20" else f" --model {args.model}")
    lines = [f"# The whole low-bit job's time: `gzsq quantize {' '.join(job[:1] + job[3:] if '--weights' in job else job)}`"
             " with block reconstruction beside round to nearest",
             f"# command: {command} ({time.strftime('%Y-%m-%d')})",
             f"# CPU cores: {os.cpu_count()}, torch threads: the CPU's cores (no --threads)", ""]
    runs: dict[str, list[float]] = {"block": [], "none": []}
    with tempfile.TemporaryDirectory() as work:
        for rep in range(REPEATS):
            for method in ("block", "none"):
                out = Path(work) / f"{args.model}-{method}-{rep}.onnx"
                load = os.getloadavg()[0]
                cmd = [sys.executable, "-m", "gzsq", "quantize", *job, "-o", str(out), "--reconstruct", method,
                       "--json", "-q"]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                seconds = time.perf_counter() - t
                if proc.returncode != 0:
                    raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
                report = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[method].append(seconds)
                lines.append(f"--reconstruct {method}, run {rep + 1}: load before {load:.2f}; whole command "
                             f"{seconds:.1f} s; stages {report['seconds']}")
                print(lines[-1], flush=True)
    lines += ["", f"| {label} | whole command, median of 3 | goal ≤ {goal} s |", "| --- | --- | --- |"]
    for method, name in (("block", "block reconstruction (default)"), ("none", "round to nearest")):
        median = statistics.median(runs[method])
        lines.append(f"| {name} | {median:.1f} s | {'met' if median <= goal else 'not met'} |")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out_file)
    print("\n".join(lines[-4:]))


if __name__ == "__main__":
    main()
