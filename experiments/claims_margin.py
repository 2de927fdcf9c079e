"""The measurement behind tests/test_claims.py's W4A4 margin, with the test's exact settings.

ResNet-32 (or --model), bn-free, W4A4, min/max, 256 calibration images, every 10th CIFAR-10 test image (1000),
seeds 0-2, torch on one thread (as the suite runs). Prints each seed's top-1 for gzsq and Gaussian
noise, the mean gap and the spread of the per-seed gaps; the test's margin is the gap minus that
spread, rounded down.

    python experiments/claims_margin.py > results/claims_margin.txt
    python experiments/claims_margin.py --reconstruct > results/claims_margin_reconstruct.txt
    python experiments/claims_margin.py --reconstruct --model cifar10-resnet20 \
        > results/claims_margin_reconstruct_r20.txt

With `--reconstruct`: the same with the job's W4A4 reconstruction shortened for the suite (MSE-clipped start,
block reconstruction with the default loss, 80 steps per block, 128 calibration images; gzsq's images are the
set the job picks for reconstruction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import argparse

from gzsq.config import CalibrationConfig, QuantConfig, ReconstructConfig
from gzsq.evaluation import EvalSet, evaluate_quantization, load_eval_set
from gzsq.models import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared"


RECONSTRUCT_SETTINGS = dict(n_images=128, quant=QuantConfig.starting_point(4, 4))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reconstruct", action="store_true", help="the reconstruction claim's measurement")
    p.add_argument("--model", default="cifar10-resnet32", choices=["cifar10-resnet20", "cifar10-resnet32"])
    p.add_argument("--n-images", type=int, help="calibration images (default: 256, or 128 with --reconstruct)")
    p.add_argument("--iters", type=int, default=80, help="reconstruction steps per block (with --reconstruct)")
    args = p.parse_args()
    torch.set_num_threads(1)
    net = args.model.removeprefix("cifar10-")
    model = load_model(args.model, SHARED / f"models/cifar10/{net}.th")
    full = load_eval_set(model, SHARED / "data/cifar10/test.npz")
    subset = EvalSet(full.path, full.images[::10].clone(), full.labels[::10])
    quant, n_images, reconstruction = QuantConfig(w_bits=4, a_bits=4), 256, None
    if args.reconstruct:
        quant, n_images = RECONSTRUCT_SETTINGS["quant"], RECONSTRUCT_SETTINGS["n_images"]
        reconstruction = ReconstructConfig(iters=args.iters)
    n_images = args.n_images or n_images
    options = f"--model {args.model}" + (f" --n-images {args.n_images}" if args.n_images else "")
    if args.reconstruct:
        options += f" --iters {args.iters}" if args.iters != 80 else ""
        print(f"# python experiments/claims_margin.py --reconstruct {options}   (bn-free, W4A4, MSE-clipped "
              f"start, block reconstruction {args.iters} steps, default loss, {n_images} images, 1000 test images, "
              "1 thread)")
    else:
        print(f"# python experiments/claims_margin.py {options}   (bn-free, W4A4, min/max, {n_images} images, "
              "1000 test images, 1 thread)")
    top1 = {}
    for source in ("gzsq", "gaussian"):
        top1[source] = [evaluate_quantization(model, subset, CalibrationConfig(source=source, n_images=n_images,
                                                                               seed=seed, setting="bn-free"), quant,
                                              reconstruction=reconstruction)["top1"]
                        for seed in (0, 1, 2)]
        print(f"{source:9s} seeds 0/1/2: {' / '.join(f'{v:.2f}' for v in top1[source])}   mean {np.mean(top1[source]):.2f}")
    gaps = np.array(top1["gzsq"]) - np.array(top1["gaussian"])
    print(f"mean gap {gaps.mean():.2f} pt; per-seed gaps {' / '.join(f'{g:.2f}' for g in gaps)}; "
          f"spread {gaps.max() - gaps.min():.2f} pt; margin = gap - spread = {gaps.mean() - (gaps.max() - gaps.min()):.2f}")


if __name__ == "__main__":
    main()
