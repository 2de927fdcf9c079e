"""How wide the propagated targets come out if a ReLU's input is taken as Laplace-shaped instead of Gaussian.

    python experiments/relu_tails_fidelity.py    # writes results/fidelity/relu_tails.txt

The ReLU-aware moments rule (targets.py) takes each ReLU's input as Gaussian with the propagated mean and std. Trained
networks' pre-activations have heavier tails, and for a given mean and std a heavier-tailed input leaves a wider
rectified output: the Gaussian rule's one-step std ratio at ReLUs is 0.94-0.98 (target_decomposition.md). Here the
same decomposition runs twice, once with the product's rectified-Gaussian moments and once with rectified-Laplace
moments (written out below), and reports medians over layers: the ReLU one-step std ratio and the propagated conv
std ratio (all, first third, last third), target / real, 1 is right. Real images: as target_error_decomposition.py.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch

import target_error_decomposition as decomposition
import gzsq.targets as targets
from gzsq.targets import Stat

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "fidelity" / "relu_tails.txt"
MODELS = ("cifar10-resnet20", "cifar10-resnet20-nf", "cifar10-vgg7-nf")  # ReLU nets (ReLU6 caps: see targets.py)


def rectify_laplace(stat: Stat, cap: float | None) -> Stat:
    """Mean and std of max(0, X) for X = mean + Laplace(0, b), b = std / √2 (no cap: the nets here use ReLU)."""
    assert cap is None
    m, b = stat.mean, stat.std.clamp_min(1e-8) / math.sqrt(2)
    e = torch.exp(-m.abs() / b)
    mean = torch.where(m <= 0, 0.5 * b * e, m + 0.5 * b * e)
    second = torch.where(m <= 0, b * b * e, m * m + 2 * b * b - b * b * e)
    return Stat(mean, (second - mean * mean).clamp_min(0).sqrt())


def main() -> None:
    torch.set_num_threads(1)
    gaussian = targets._rectify
    lines = ["# python experiments/relu_tails_fidelity.py",
             "| model | ReLU input | ReLU one-step std | propagated conv std: all | first third | last third |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, weights, data_path, n in decomposition.CASES:
        if name not in MODELS:
            continue
        gm, images = decomposition.folded_with_real_images(name, weights, data_path, n)
        for label, rule in (("Gaussian (the product)", gaussian), ("Laplace", rectify_laplace)):
            targets._rectify = decomposition._rectify = rule  # both the propagation and the one-step check
            try:
                rows = decomposition.decompose(gm, images)
            finally:
                targets._rectify = decomposition._rectify = gaussian
            relu = [r["step"][0] for r in rows if r["kind"] == "relu"]
            prop = [r["propagated"][0] for r in rows if r["kind"] != "relu"]
            k = len(prop) // 3
            lines.append(f"| {name} | {label} | {statistics.median(relu):.2f} | {statistics.median(prop):.2f} | "
                         f"{statistics.median(prop[:k]):.2f} | {statistics.median(prop[-k:]):.2f} |")
            print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
