"""Are the learned 4-bit activation ranges what separates gzsq's images from real ones after reconstruction?

After block reconstruction at W4A4 the activation step sizes learned on `half-local` images are wider than the
ones learned on real CIFAR-10 images (median over tensors 1.48× on ResNet-20, 1.35× on ResNet-44, seed 0,
from the encodings files in results/lowbit/). This script reconstructs once on gzsq's images (the default job:
preset auto = half-local, 256 images, MSE-clipped start, 500 steps per unit) and evaluates the result on all
10 000 test images in the simulator as it is and with its activation encodings replaced:

- `real`: every activation quantizer's range from the committed real-image run of the same model and seed
  (an oracle: it shows what the ranges alone are worth, not something a user without data can do);
- `default`: the ranges learned on the `default` preset's images (the propagated targets alone), from the
  committed `gzsq-default` run: the ranges a narrower set learns, the rounding from the mixed set;
- `xF`: every layer-input range scaled by F around its zero point (the step size times F).

    python experiments/recon_act_widths.py --models cifar10-resnet20 cifar10-resnet44 --seed 0

One JSON line per model and variant goes to results/lowbit/recon_act_widths.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

import gzsq
from assets import CIFAR_TEST, WEIGHTS
from gzsq.config import ImagesFor
from gzsq.data import load_eval_set
from gzsq.metrics import predict, top1
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.calibrate import calibrate

LOWBIT = Path(__file__).resolve().parent.parent / "results" / "lowbit"
OUT = LOWBIT / "recon_act_widths.jsonl"


def committed_grids(model: str, calib: str, seed: int) -> dict[str, tuple[float, int]]:
    """Every activation quantizer's (scale, zero point) in a committed W4A4 run's encodings file."""
    run = f"{model}_w4a4_{calib}_s{seed}_block500"
    acts = json.loads((LOWBIT / run / f"{run}.encodings.json").read_text())["activations"]
    return {name: (a["scale"], a["zero_point"]) for name, a in acts.items()}


def set_grids(sim, grids: dict[str, tuple[float, int]], factor: float = 1.0) -> None:
    """Give `sim`'s layer-input quantizers these grids, step sizes times `factor` (the pixel grid stays)."""
    for name, q in sim.act_quantizers().items():
        if q.role == "input":
            continue
        scale, zero_point = grids[name]
        q.scale, q.zero_point = scale * factor, zero_point
        q.lo, q.hi = -zero_point * q.scale, (2 ** q.bits - 1 - zero_point) * q.scale


def record(line: dict, path: Path) -> None:
    """Print one result and append it to a JSON-lines file."""
    print(json.dumps(line), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cifar10-resnet20", "cifar10-resnet44"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factors", nargs="+", type=float, default=[0.9, 0.8, 0.7])
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name in args.models:
        t = time.time()
        model = gzsq.load_model(name, str(WEIGHTS[name]))
        data = load_eval_set(model, CIFAR_TEST)
        config = gzsq.CalibrationConfig(source="gzsq", seed=args.seed, setting="bn-free").resolved(
            model, ImagesFor(reconstructing=True))
        calib = calibrate(model, config).images
        sim = reconstruct(model, quantize(model, calib, gzsq.QuantConfig.starting_point(4, 4)), calib,
                          gzsq.ReconstructConfig(), seed=args.seed)
        fp32 = predict(model, data.images)
        learned = {n: (q.scale, q.zero_point) for n, q in sim.act_quantizers().items()}
        variants = [("as learned", learned, 1.0), ("real", committed_grids(name, "real", args.seed), 1.0),
                    ("default", committed_grids(name, "gzsq", args.seed), 1.0)]
        variants += [(f"x{f:g}", learned, f) for f in args.factors]
        for label, grids, factor in variants:
            set_grids(sim, grids, factor)
            widths = [q.scale / learned[n][0] for n, q in sim.act_quantizers().items() if q.role != "input"]
            pred = predict(sim, data.images)
            line = {"model": name, "seed": args.seed, "calib": f"gzsq-{config.preset}", "ranges": label,
                    "median_width_vs_learned": round(statistics.median(widths), 3),
                    "top1": round(top1(pred, data.labels), 2), "agreement": round(float((pred == fp32).mean() * 100), 2),
                    "fp32_top1": round(top1(fp32, data.labels), 2), "wall_s": round(time.time() - t), "commit": commit}
            record(line, OUT)
            set_grids(sim, learned)


if __name__ == "__main__":
    main()
