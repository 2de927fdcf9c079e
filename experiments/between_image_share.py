"""How much do the calibration images differ from one another in what each conv's input channels respond to?

gzsq's targets fix each channel's mean and spread over the whole set, and say nothing of how that spread splits
between positions within an image and differences from image to image. Real images differ a lot: a deep channel
fires on some images (their class, their objects) and stays quiet on others. For every Conv2d input (BN folded),
per source, this prints:

- `between`: the share of a channel's variance that is between images (variance over images of the channel's
  per-image spatial mean, over its variance over images and positions), mean over live channels;
- `img rank`: participation ratio of the covariance of the images' per-image channel-mean vectors, over
  min(images, channels) − 1 (how many directions the images differ from one another in);
- `eff. rank`: the same over the channel covariance of every image and position (input_correlations.py's).

Sources: real images (CIFAR-10 training images; the ImageNet sample), the set gzsq's reconstruction job uses
(the preset it resolves to, with its crop copies), Gaussian noise.

    python experiments/between_image_share.py --model cifar10-resnet44 --seed 0
    python experiments/between_image_share.py --model efficientnet-lite0 --seed 0 --n-images 64
    python experiments/between_image_share.py --model cifar10-resnet44 --summary \
        --variants half-local+ce_weight=1.0    # more gzsq sets (preset+overrides), the thirds' means only
"""

from __future__ import annotations

import argparse
import sys

import torch

from input_correlations import add_variants, job_sources, measure, print_table, statistics_of


def between_statistics(x: torch.Tensor) -> tuple[float, float, float]:
    """(between-image share of the variance, per-image-mean effective rank, effective rank) of one N×C×H×W input."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    live = flat.std(1) > 1e-6
    if int(live.sum()) < 2:
        return float("nan"), float("nan"), float("nan")
    eff_rank = statistics_of(x)[1]
    total = flat[live].var(1)
    means = x[:, live].mean((2, 3))  # N × C'
    share = (means.var(0) / total).mean()
    cov = torch.cov(means.T)
    eig = torch.linalg.eigvalsh(cov).clamp(min=0)
    rank = eig.sum() ** 2 / (eig ** 2).sum().clamp(min=1e-30) / max(1, min(means.shape) - 1)
    return float(share), float(rank), eff_rank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar10-resnet20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=None, help="images per source (default: 256 CIFAR, 64 at 224×224)")
    p.add_argument("--variants", nargs="*", default=[], help="more gzsq sets: PRESET+KEY=VALUE[,KEY=VALUE]")
    p.add_argument("--summary", action="store_true", help="only the means over each third of the convs")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, sources, base = job_sources(args.model, args.seed, args.n_images, default_n_224=64)
    stats = measure(model, sources, add_variants(sources, args.variants, base), between_statistics)
    print("# python experiments/between_image_share.py " + " ".join(sys.argv[1:]))
    print_table(stats, "between / img rank / eff. rank", args.summary, third_digits=3)


if __name__ == "__main__":
    main()
