"""Does a more varied calibration set make learned rounding carry over? Per-part jitter of the target spreads.

Real images' deep conv inputs spread their energy over more directions than gzsq's (effective rank of the channel
covariance, results/fidelity/input_correlations.txt), and `half-local`, whose two halves sit in different places,
is both richer there and better for W4A4 reconstruction than either half alone. Here the 256-image set is
distilled in four parts of 64 (two with local targets, two with the propagated ones, as `half-local`), and each
part's target std of every channel is multiplied by its own factor exp(s·z), z ~ N(0, 1) drawn per part, layer
and channel (s = 0: the same four parts without jitter, the control). Then: the deep layers' effective rank,
and W4A4 block reconstruction (MSE-clipped start, 500 steps per unit) evaluated in the simulator on all 10 000
CIFAR-10 test images.

    python experiments/target_jitter.py --models cifar10-resnet20 cifar10-resnet44 --jitter 0 0.5 --seeds 0

One JSON line per run goes to results/lowbit/target_jitter.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import torch

import gzsq
from assets import CIFAR_TEST, WEIGHTS
from gzsq.data import load_eval_set
from gzsq.distillation.loop import Objective, distill_images
from gzsq.fold import fold_bn
from gzsq.metrics import predict, top1
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.gzsq import _local_rule, layer_targets, recipe_for
from input_correlations import conv_inputs, statistics_of

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "target_jitter.jsonl"
PARTS, PART_SIZE = 4, 64  # the first half of the parts local, the rest propagated


def jittered_set(model, seed: int, jitter: float) -> torch.Tensor:
    folded = fold_bn(model)
    recipe = recipe_for("half-local")
    t = recipe.targets
    base = layer_targets(folded, t)
    names = {id(m): n for n, m in folded.named_modules()}
    rule = _local_rule(t)
    distill = replace(recipe.distill, batch_size=PART_SIZE, distill_images=PART_SIZE, distill_pixels=0)
    gen = torch.Generator().manual_seed(1000 + seed)
    parts = []
    for k in range(PARTS):
        factor = {n: torch.exp(jitter * torch.randn(len(s), generator=gen)) for n, (_, s) in base.items()}
        local = k < PARTS // 2

        def jittered_rule(layer, mean, std, factor=factor):
            m, s = rule(layer, mean, std)
            return m, s * factor[names[id(layer)]]
        objective = Objective({n: (m, s * factor[n]) for n, (m, s) in base.items()},
                              local_rule=jittered_rule if local else None)
        images, _ = distill_images(folded, objective, PART_SIZE, model.input_spec.shape, distill,
                                   seed=seed * 10 + k, pixel_bounds=model.input_spec.pixel_bounds(),
                                   num_classes=list(base.values())[-1][0].numel())
        parts.append(images)
    return torch.cat(parts)


def deep_rank(model, images) -> list[float]:
    stats = [statistics_of(v)[1] for v in conv_inputs(model, images).values()]
    n = len(stats)
    return [round(sum(p) / len(p), 3) for p in (stats[: n // 3], stats[n // 3: 2 * n // 3], stats[2 * n // 3:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cifar10-resnet20", "cifar10-resnet44"])
    p.add_argument("--jitter", nargs="+", type=float, default=[0.0, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--rank-only", action="store_true", help="only the effective ranks, no reconstruction")
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name in args.models:
        model = gzsq.load_model(name, str(WEIGHTS[name]) if name in WEIGHTS else None)
        data = None if args.rank_only else load_eval_set(model, CIFAR_TEST)
        for seed in args.seeds:
            for jitter in args.jitter:
                t = time.time()
                calib = jittered_set(model, seed, jitter)
                line = {"model": name, "seed": seed, "jitter": jitter, "effective_rank_thirds": deep_rank(model, calib)}
                if not args.rank_only:
                    sim = reconstruct(model, quantize(model, calib, gzsq.QuantConfig.starting_point(4, 4)), calib,
                                      gzsq.ReconstructConfig(), seed=seed)
                    line["top1"] = round(top1(predict(sim, data.images), data.labels), 2)
                line.update(wall_s=round(time.time() - t), commit=commit)
                print(json.dumps(line), flush=True)
                if not args.rank_only:
                    with OUT.open("a") as f:
                        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
