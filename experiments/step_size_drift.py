"""How far do the learned 4-bit activation step sizes move from their calibrated start, net by net?

On the ResNet-56 the W4A4 default falls below noise because the learned step sizes narrow to the synthetic set's
narrow deep activations (results/deeper_resnet/README.md); a floor at the calibrated step fixes it there but costs
the shallower nets about a point. Whether a lower floor can tell the two apart depends on how far the step sizes
move on each net. This script builds the W4A4 job's calibration set (preset auto, 256 images, MSE-clipped start),
reconstructs with the default `ReconstructConfig` and prints, per activation quantizer, the ratio learned / calibrated
step size, then its quantiles per third of the net and the simulator top-1 on all 10 000 test images. Quantizers come
in the order the simulation model holds them: graph order, but for the last two (the classifier's input before the
last block's output).

    python experiments/step_size_drift.py --models cifar10-resnet20 cifar10-resnet56 --seed 0

Per-quantizer rows go to results/deeper_resnet/step_size_drift.jsonl, the summary to step_size_drift.txt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import gzsq
from assets import CIFAR_TEST, CIFAR_TRAIN, WEIGHTS, cifar_checkpoint
from gzsq.config import ImagesFor
from gzsq.data import load_eval_set
from gzsq.metrics import predict, top1
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.calibrate import calibrate

OUT = Path(__file__).resolve().parent.parent / "results" / "deeper_resnet"


def quantiles(values: list[float]) -> str:
    t = torch.tensor(values)
    q = torch.quantile(t, torch.tensor([0.0, 0.1, 0.5, 0.9])).tolist()
    return "min {:.2f} p10 {:.2f} median {:.2f} p90 {:.2f}".format(*q)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cifar10-resnet20"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib", default="gzsq", choices=["gzsq", "real", "gaussian"])
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = "$ python experiments/step_size_drift.py " + " ".join(sys.argv[1:])
    for name in args.models:
        t = time.time()
        model = gzsq.load_model(name, str(WEIGHTS[name]) if name in WEIGHTS else cifar_checkpoint(name))
        data = load_eval_set(model, CIFAR_TEST)
        config = gzsq.CalibrationConfig(source=args.calib, seed=args.seed, setting="bn-free", n_images=256,
                                        data=str(CIFAR_TRAIN) if args.calib == "real" else None)
        config = config.resolved(model, ImagesFor(reconstructing=True))
        calib = calibrate(model, config).images
        start = quantize(model, calib, gzsq.QuantConfig.starting_point(4, 4))
        before = {n: q.scale for n, q in start.act_quantizers().items() if q.role != "input"}
        sim = reconstruct(model, start, calib, gzsq.ReconstructConfig(), seed=args.seed)
        after = {n: q.scale for n, q in sim.act_quantizers().items() if q.role != "input"}
        roles = {n: q.role for n, q in sim.act_quantizers().items()}
        acc = top1(predict(sim, data.images), data.labels)
        names = list(before)  # the simulation model's order
        ratios = [after[n] / before[n] for n in names]
        label = f"gzsq-{config.preset}" if args.calib == "gzsq" else args.calib
        with (OUT / "step_size_drift.jsonl").open("a") as f:
            for i, n in enumerate(names):
                f.write(json.dumps({"model": name, "seed": args.seed, "calib": label, "index": i, "tensor": n,
                                    "role": roles[n], "calibrated": before[n], "learned": after[n],
                                    "ratio": round(ratios[i], 4), "commit": commit}) + "\n")
        third = max(1, len(names) // 3)
        parts = [ratios[:third], ratios[third:2 * third], ratios[2 * third:]]
        lines = [command, f"{name} seed {args.seed} {label}: {len(names)} quantizers, top-1 {acc:.2f}, "
                 f"{time.time() - t:.0f} s, commit {commit}",
                 f"  all          {quantiles(ratios)}",
                 *(f"  {part:<12} {quantiles(r)}" for part, r in zip(["first third", "middle", "last third"], parts)),
                 "  share below 0.5 / 0.7 / 0.8 / 0.9 / 1: " + " / ".join(
                     f"{sum(r < c for r in ratios) / len(ratios):.2f}" for c in (0.5, 0.7, 0.8, 0.9, 1.0))]
        print("\n".join(lines), flush=True)
        with (OUT / "step_size_drift.txt").open("a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
