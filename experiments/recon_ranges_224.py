"""Are the 224×224 W4A8 reconstructions on gzsq's images held back by their activation ranges?

The reports of the W4A8 runs show the deep layers' ranges learned on gzsq's images at 0.07–0.25× the width of those
learned on real images (MobileNetV2, last third of the quantizers; Gaussian noise 0.16–0.4×), while at 8 bits a range
too narrow clips every larger activation of a real image. This script reconstructs once on gzsq's images (the
command's default: preset auto = `local-long`, 64 images, MSE-clipped start, 500 steps per unit), keeps the learned
rounding, and evaluates the simulator on the odd rows of the ImageNet sample (fold B, 250 images) with other
activation grids put in place of the learned ones:

- `real mse` (an oracle): the MSE-clipped starting ranges on 64 real images (even rows, fold A), everywhere, or in
  the first two thirds / the last third of the quantizers only (which layers does it come from?);
- `gzsq minmax` / `gzsq mse`: the ranges gzsq's own images give before learning (min/max, MSE-clipped start);
- `xF`: every learned range (the pixel grid excepted) F times as wide.

    python experiments/recon_ranges_224.py --model mobilenet-v2 --seed 0
    python experiments/recon_ranges_224.py --model mobilenet-v2 --seed 0 --bits 6,6

--bits W,A (default 4,8) sets the job's bit widths; the line records them when they are not W4A8.

One JSON line per variant goes to results/lowbit/recon_ranges_224.jsonl (one thread).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import gzsq
from assets import IMAGENET_SAMPLE, WEIGHTS
from imagenet_int8 import make_folds
from recon_act_widths import record, set_grids
from gzsq.config import ImagesFor
from gzsq.data import load_eval_set
from gzsq.metrics import predict, top1
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.calibrate import calibrate

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "recon_ranges_224.jsonl"


def grids_of(sim) -> dict[str, tuple[float, int]]:
    return {n: (q.scale, q.zero_point) for n, q in sim.act_quantizers().items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet-v2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factors", nargs="+", type=float, default=[2.0, 4.0])
    p.add_argument("--bits", default="4,8", help="W,A")
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    t = time.time()
    model = gzsq.load_model(args.model, str(WEIGHTS[args.model])) if args.model in WEIGHTS \
        else gzsq.load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folds = make_folds(Path(tmp), IMAGENET_SAMPLE)
        real = load_eval_set(model, folds["A"]).images
        data = load_eval_set(model, folds["B"])
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))[:64]]
    config = gzsq.CalibrationConfig(source="gzsq", seed=args.seed, setting="bn-free", n_images=64).resolved(
        model, ImagesFor(reconstructing=True))
    calib = calibrate(model, config).images
    w_bits, a_bits = (int(b) for b in args.bits.split(","))
    start = gzsq.QuantConfig.starting_point(w_bits, a_bits)
    sim = reconstruct(model, quantize(model, calib, start), calib, gzsq.ReconstructConfig(), seed=args.seed)
    learned = grids_of(sim)
    names = [n for n, q in sim.act_quantizers().items() if q.role != "input"]
    deep = set(names[2 * len(names) // 3:])
    real_mse = grids_of(quantize(model, real, start))
    gzsq_minmax = grids_of(quantize(model, calib, gzsq.QuantConfig(w_bits=w_bits, a_bits=a_bits, observer="minmax")))
    gzsq_mse = grids_of(quantize(model, calib, start))
    fp32 = predict(model, data.images)

    def mixed(other: dict, where: set) -> dict:
        return {n: (other[n] if n in where else learned[n]) for n in learned}

    variants = [("as learned", learned, 1.0), ("real mse", real_mse, 1.0),
                ("real mse, first two thirds", mixed(real_mse, set(names) - deep), 1.0),
                ("real mse, last third", mixed(real_mse, deep), 1.0),
                ("gzsq minmax", gzsq_minmax, 1.0), ("gzsq mse", gzsq_mse, 1.0)]
    variants += [(f"x{f:g}", learned, f) for f in args.factors]
    for label, grids, factor in variants:
        set_grids(sim, grids, factor)
        widths = {n: sim.act_quantizers()[n].scale / learned[n][0] for n in names}
        pred = predict(sim, data.images)
        line = {"model": args.model, "seed": args.seed, "calib": f"gzsq-{config.preset}", "ranges": label,
                **({} if (w_bits, a_bits) == (4, 8) else {"bits": f"W{w_bits}A{a_bits}"}),
                "median_width_vs_learned": round(statistics.median(widths.values()), 3),
                "median_width_vs_learned_last_third": round(statistics.median(widths[n] for n in deep), 3),
                "top1": round(top1(pred, data.labels), 2), "agreement": round(float((pred == fp32).mean() * 100), 2),
                "fp32_top1": round(top1(fp32, data.labels), 2), "images": len(data.labels),
                "wall_s": round(time.time() - t), "commit": commit}
        record(line, OUT)
        set_grids(sim, learned)


if __name__ == "__main__":
    main()
