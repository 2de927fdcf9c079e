"""Top-1 and FP32 agreement of `cifar10-vgg7-nf` in the results grid, mean ± std over seeds.

    python experiments/vgg_grid_summary.py

Reads the model's rows of results/accuracy.csv (written by `python experiments/run_accuracy.py
--models cifar10-vgg7-nf ...`, merged by experiments/make_tables.py) and writes
results/vgg_grid.md (the command on its first line). results/accuracy.md holds top-1 only;
this adds the agreement (share of test images whose quantized top-1 equals the FP32 top-1).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from gzsq.atomic import atomic_write_text
from run_accuracy import read_rows

ROOT = Path(__file__).resolve().parents[1]
MODEL = "cifar10-vgg7-nf"
BITS = [(8, 8), (6, 6), (4, 8), (4, 4)]
CALIBS = ["gzsq-default", "gaussian", "real"]


def cell(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f} ({len(values)} seed)" if values else "–"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> int:
    rows = [r for r in read_rows(ROOT / "results/accuracy.csv")
            if r["model"] == MODEL and r["setting"] == "bn-free" and r["observer"] == "minmax"]
    if not rows:
        raise SystemExit(f"no {MODEL} rows in results/accuracy.csv")
    fp32 = {r["fp32_top1"] for r in rows}
    seeds = sorted({int(r["seed"]) for r in rows})
    md = ["# python experiments/vgg_grid_summary.py", "",
          f"`{MODEL}`, setting bn-free, min/max observer, {rows[0]['n_calib']} calibration images, all 10 000",
          f"CIFAR-10 test images; FP32 top-1 {', '.join(sorted(fp32))} %; mean ± std over seeds "
          f"{', '.join(map(str, seeds))} (rows of results/accuracy.csv).", ""]
    for metric, title in (("top1", "top-1 %"), ("agreement", "agreement with FP32 %")):
        md += [f"## {title}", "", "| calibration | " + " | ".join(f"W{w}A{a}" for w, a in BITS) + " |",
               "| --- | " + " | ".join("---" for _ in BITS) + " |"]
        for c in CALIBS:
            cells = [cell([float(r[metric]) for r in rows if r["calib"] == c
                           and (int(r["w_bits"]), int(r["a_bits"])) == (w, a)]) for w, a in BITS]
            md.append(f"| {c} | " + " | ".join(cells) + " |")
        md.append("")
    atomic_write_text(ROOT / "results/vgg_grid.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
