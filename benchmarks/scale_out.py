"""One process vs two (torchrun, gloo) on the same CPU: distillation and reconstruction, median of 3.

    python benchmarks/scale_out.py            # → benchmarks/results/scale_out.txt

Each job runs as a real command line:
- distill: `gzsq distill cifar10-resnet20 --n-calib 256` (the default 256 images, 20 steps);
- reconstruct: `gzsq evaluate --model cifar10-resnet20 --w-bits 4 --a-bits 4 --reconstruct block
  --reconstruct-iters 100` on 1000 test images, timed by the command's own `seconds.reconstruct`.
Configurations: 1 process on 1 thread, 1 process on 2 threads, 2 processes on 1 thread each
(`torchrun --standalone --nproc-per-node 2 -m gzsq …`). The file also records the machine's load
before each run and checks that two processes give the one-process result (images max abs
difference; top-1 and agreement equal).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "models/cifar10/resnet20.th"
OUT = ROOT / "benchmarks" / "results" / "scale_out.txt"
REPEATS = 3


def run(cmd: list[str], procs: int) -> tuple[float, subprocess.CompletedProcess]:
    prefix = [sys.executable, "-m", "gzsq"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), "-m", "gzsq"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t = time.perf_counter()
    proc = subprocess.run(prefix + cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(prefix + cmd)}\n{proc.stderr[-2000:]}")
    return seconds, proc


def main() -> None:
    lines = [f"# {__doc__.splitlines()[0]}", f"# command: python benchmarks/scale_out.py ({time.strftime('%Y-%m-%d')})",
             f"# CPU cores: {os.cpu_count()}", ""]
    configs = [("1 process, 1 thread", 1, "1"), ("1 process, 2 threads", 1, "2"), ("2 processes, 1 thread each", 2, "1")]
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "test1000.npz"
        d = np.load(SHARED / "data/cifar10/test.npz")
        np.savez(data, images=d["images"][::10], labels=d["labels"][::10])
        results: dict[str, dict[str, list[float]]] = {}
        checks: dict[str, object] = {}
        for label, procs, threads in configs:
            results[label] = {"distill": [], "reconstruct": []}
            for rep in range(REPEATS):
                out = Path(work) / f"set-{procs}-{threads}-{rep}.npz"
                load = os.getloadavg()[0]
                seconds, _ = run(["distill", "cifar10-resnet20", "--weights", str(WEIGHTS), "-o", str(out),
                                  "--threads", threads, "-q"], procs)
                results[label]["distill"].append(seconds)
                checks.setdefault(f"images {label}", np.load(out)["images"])
                _, proc = run(["evaluate", "--model", "cifar10-resnet20", "--weights", str(WEIGHTS), "--data",
                               str(data), "--w-bits", "4", "--a-bits", "4", "--reconstruct", "block",
                               "--reconstruct-iters", "100", "--threads", threads, "--json", "-q"], procs)
                row = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
                results[label]["reconstruct"].append(row["seconds"]["reconstruct"])
                checks.setdefault(f"eval {label}", (row["top1"], row["agreement"]))
                lines.append(f"{label}, run {rep + 1}: load before {load:.2f}; distill {seconds:.1f} s (whole "
                             f"command); reconstruct {row['seconds']['reconstruct']:.1f} s; W4A4 top-1 {row['top1']} "
                             f"agreement {row['agreement']}")
    base = results[configs[0][0]]
    lines += ["", "| configuration | distill s (median of 3, whole command) | speed-up | reconstruct s (median of 3) "
                  "| speed-up |", "| --- | --- | --- | --- | --- |"]
    for label, _, _ in configs:
        dist_s, rec_s = statistics.median(results[label]["distill"]), statistics.median(results[label]["reconstruct"])
        lines.append(f"| {label} | {dist_s:.1f} | {statistics.median(base['distill']) / dist_s:.2f}× | {rec_s:.1f} | "
                     f"{statistics.median(base['reconstruct']) / rec_s:.2f}× |")
    one, two = checks["images 1 process, 1 thread"], checks["images 2 processes, 1 thread each"]
    lines += ["", f"2 processes vs 1 process on 1 thread: distilled images max abs difference "
                  f"{float(np.abs(one - two).max()):.3g}; W4A4 (top-1, agreement) {checks['eval 2 processes, 1 thread each']} "
                  f"vs {checks['eval 1 process, 1 thread']}"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
