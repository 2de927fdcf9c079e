"""What do the convs' inputs look like, beyond each channel's mean and spread, on gzsq's images vs real ones?

Learned rounding minimizes each unit's output error over the calibration inputs, so what it learns depends on
the inputs' second-order structure: which channels move together, and how smooth each channel is over the
kernel window. gzsq's targets fix each channel's mean and spread only. For every Conv2d input (BN folded) this
prints, per source (256 images each at 32×32, 32 at 224×224: real images (CIFAR-10 training images; the ImageNet
sample), gzsq's set for a reconstruction job, gzsq's `default` preset, Gaussian noise):

- `chan |r|`: mean absolute correlation between two channels (over images and positions);
- `eff. rank`: participation ratio of the channel covariance's eigenvalues / channels (1: all channels
  independent and equally spread; small: a few directions carry the energy);
- `nbr r`: mean correlation of a channel's value with its right-hand neighbour (spatial smoothness).

    python experiments/input_correlations.py --model cifar10-resnet20 --seed 0 > results/fidelity/input_correlations.txt
    python experiments/input_correlations.py --summary --variants half-local+ce_weight=1.0 \\
        default+init_spectrum=1.0,init_colour=0.85     # more gzsq recipes (preset+overrides), the thirds' means only
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

import gzsq
from assets import CIFAR_TRAIN, IMAGENET_SAMPLE, WEIGHTS
from overrides import parse_overrides
from gzsq.config import ImagesFor
from gzsq.fold import fold_bn
from gzsq.sources.calibrate import calibrate


def conv_inputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every Conv2d's input on `images` (the folded network), by module path, in forward order."""
    net = fold_bn(model)
    found: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: found.setdefault(name, args[0].detach()))
             for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(images)
    for h in hooks:
        h.remove()
    return found


def statistics_of(x: torch.Tensor) -> tuple[float, float, float]:
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    live = flat.std(1) > 1e-6
    flat = flat[live]
    if len(flat) < 2:
        return float("nan"), float("nan"), float("nan")
    cov = torch.cov(flat)
    std = cov.diagonal().sqrt()
    corr = cov / std[:, None] / std[None, :]
    off = corr[~torch.eye(len(corr), dtype=torch.bool)].abs().mean()
    eig = torch.linalg.eigvalsh(cov).clamp(min=0)
    rank = eig.sum() ** 2 / (eig ** 2).sum() / len(eig)
    a, b = x[:, live, :, :-1], x[:, live, :, 1:]
    a = (a - a.mean((0, 2, 3), keepdim=True)) / (a.std((0, 2, 3), keepdim=True) + 1e-12)
    b = (b - b.mean((0, 2, 3), keepdim=True)) / (b.std((0, 2, 3), keepdim=True) + 1e-12)
    nbr = (a * b).mean((0, 2, 3)).mean()
    return float(off), float(rank), float(nbr)


def job_sources(name: str, seed: int, n_images: int | None, default_n_224: int, with_default: bool = False):
    """→ (model, sources, base settings): real images (CIFAR-10 training images; the ImageNet sample), the set gzsq's
    reconstruction job uses, gzsq's `default` preset if asked, Gaussian noise; 256 images at 32×32 by default."""
    model = gzsq.load_model(name, str(WEIGHTS[name]) if name in WEIGHTS else None)
    cifar = name.startswith("cifar10")
    base = dict(seed=seed, setting="bn-free", n_images=n_images or (256 if cifar else default_n_224))
    recon = gzsq.CalibrationConfig(source="gzsq", **base).resolved(model, ImagesFor(reconstructing=True))
    sources = {"real": gzsq.CalibrationConfig(source="real", data=str(CIFAR_TRAIN if cifar else IMAGENET_SAMPLE),
                                                   **base),
               f"gzsq-{recon.preset}": recon}
    if with_default:
        sources["gzsq-default"] = gzsq.CalibrationConfig(source="gzsq", preset="default", **base)
    sources["gaussian"] = gzsq.CalibrationConfig(source="gaussian", **base)
    return model, sources, base


def add_variants(sources: dict, variants: list[str], base: dict) -> dict:
    """Add a gzsq source per PRESET+KEY=VALUE[,KEY=VALUE] variant to `sources`; → its overrides by label."""
    overrides = {}
    for variant in variants:
        preset, _, pairs = variant.partition("+")
        sources[f"gzsq-{variant}"] = gzsq.CalibrationConfig(source="gzsq", preset=preset, **base)
        overrides[f"gzsq-{variant}"] = parse_overrides(pairs)
    return overrides


def measure(model: nn.Module, sources: dict, overrides: dict, statistic) -> dict:
    """source label → conv path → statistic(that conv's input on the source's images)."""
    stats = {}
    for label, config in sources.items():
        images = calibrate(model, config, overrides=overrides.get(label, ())).images
        stats[label] = {k: statistic(v) for k, v in conv_inputs(model, images).items()}
    return stats


def print_table(stats: dict, columns: str, summary: bool, third_digits: int = 2) -> None:
    """stats: source → conv → a tuple of three numbers. Markdown rows per conv (unless `summary`), then the means
    over each third of the convs."""
    labels = list(stats)
    print("| conv input of | " + " | ".join(f"{s}: {columns}" for s in labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    layers = list(stats["real"])
    for layer in [] if summary else layers:
        print(f"| {layer} | " + " | ".join("{:.2f} / {:.2f} / {:.2f}".format(*stats[s][layer]) for s in labels) + " |")
    n = len(layers)
    third = " / ".join([f"{{:.{third_digits}f}}"] * 3)
    for part, rows in (("first third", layers[: n // 3]), ("middle third", layers[n // 3: 2 * n // 3]),
                       ("last third", layers[2 * n // 3:])):
        means = {s: [sum(stats[s][k][i] for k in rows) / len(rows) for i in range(3)] for s in labels}
        print(f"| **mean, {part}** | " + " | ".join(third.format(*means[s]) for s in labels) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar10-resnet20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="*", default=[], help="more gzsq sets: PRESET+KEY=VALUE[,KEY=VALUE]")
    p.add_argument("--summary", action="store_true", help="only the means over each third of the convs")
    p.add_argument("--n-images", type=int, default=None, help="images per source (default: 256 CIFAR, 32 at 224×224)")
    p.add_argument("--zeroq", action="store_true", help="also ZeroQ's images (from the BN statistics)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, sources, base = job_sources(args.model, args.seed, args.n_images, default_n_224=32, with_default=True)
    if args.zeroq:  # ZeroQ reads the BN statistics: setting bn
        sources["zeroq"] = gzsq.CalibrationConfig(source="zeroq", **{**base, "setting": "bn"})
    stats = measure(model, sources, add_variants(sources, args.variants, base), statistics_of)
    print("# python experiments/input_correlations.py " + " ".join(sys.argv[1:]))
    print_table(stats, "chan abs r / eff. rank / nbr r", args.summary)


if __name__ == "__main__":
    main()
