"""How far gzsq's target means and stds are from real images', and how much of it each layer inherits.

    python experiments/mean_dispersion.py cifar10-resnet20 cifar10-resnet32 cifar10-resnet44 \
        cifar10-resnet20-nf cifar10-resnet32-nf > results/fidelity/mean_dispersion.txt

For every Conv2d/Linear output of the folded network, on 256 CIFAR-10 test images (every 39th: every class): the
per-channel mean and std of the real output against three estimates of them,
- `prop`: the propagated targets (moments rule, ReLU-aware, ρ = 1: the default presets' targets), which carry
  every earlier layer's error;
- `local`: the same rule applied once, to the real input's own per-channel statistics at that layer (what local
  targets evaluate on the images), so only the rule's own error at that layer;
- `bn`: the folded BatchNorm's (β, |γ|), the training data's statistics (BN-trained nets only; a measurement).
Mean error: the median over channels of |estimate − real mean| / real std. Std ratio: the median over channels of
estimate / real std. Each is then the median over the layers of the first, middle and last third.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from gzsq.targets import Stat, one_step
from oracle_targets import bn_statistics
from std_dispersion import real_layer_moments


def layer_rows(name: str) -> list[dict]:
    model, net, targets, seen = real_layer_moments(name)
    oracle = bn_statistics(model)
    modules = dict(net.named_modules())
    rows = []
    for k, stat in targets.layers.items():
        (in_mean, in_std), (mean, std) = seen[k]
        live = std > 1e-6
        if int(live.sum()) < 3:
            continue
        local = one_step(modules[k], Stat(in_mean, in_std), coherence=1.0)
        estimates = {"prop": (stat.mean, stat.std), "local": (local.mean, local.std)}
        if k in oracle:
            estimates["bn"] = oracle[k]
        row = {}
        for label, (mu, sigma) in estimates.items():
            row[f"{label}_mean"] = float(((mu - mean).abs() / std)[live].median())
            row[f"{label}_std"] = float((sigma / std)[live].median())
        rows.append(row)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    print(f"$ python experiments/mean_dispersion.py {' '.join(sys.argv[1:])}")
    print("model, third of the target layers: mean error in real stds (prop / local / bn) | "
          "std ratio to real (prop / local / bn)")
    for name in sys.argv[1:]:
        rows = layer_rows(name)
        n = len(rows)
        for label, part in (("first", rows[:n // 3]), ("middle", rows[n // 3:2 * n // 3]), ("last", rows[2 * n // 3:])):
            def med(key):
                values = [r[key] for r in part if key in r]
                return f"{np.median(values):.2f}" if values else "–"
            means = " / ".join(med(f"{e}_mean") for e in ("prop", "local", "bn"))
            stds = " / ".join(med(f"{e}_std") for e in ("prop", "local", "bn"))
            print(f"{name:22s} {label:6s}  {means} | {stds}")


if __name__ == "__main__":
    main()
