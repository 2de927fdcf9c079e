"""Does weighing each channel by its inverse spread make reconstruction on distilled images carry over?

Rounding learned on gzsq's images fits them and not real ones: Lite0 W4A8 gives 47–49 % where 64 real images
give 74 % (results/lowbit/). gzsq's deep channels are unevenly excited (results/fidelity/), and a plain squared
error ignores the ones the images barely move. `ReconstructConfig(loss="channel-normalized")` divides each output
channel's error by its variance over the calibration set first.

    python experiments/recon_loss.py --models efficientnet-lite0 --bits 4,8 --losses mse channel-normalized --seeds 0

Each run: `gzsq.evaluate` (the simulator) with gzsq's images (preset auto, setting bn-free), MSE-clipped starting
ranges and weights, block reconstruction with the default steps, one thread; all 10 000 CIFAR-10 test images or
the 500-image ImageNet sample. One JSON line per run is appended to results/lowbit/recon_loss.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

import gzsq
from assets import CIFAR_TEST, IMAGENET_SAMPLE, WEIGHTS

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "recon_loss.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["efficientnet-lite0"])
    p.add_argument("--bits", default="4,8", help="W,A")
    p.add_argument("--losses", nargs="+", default=["mse", "channel-normalized"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--calib", default="gzsq")
    args = p.parse_args()
    torch.set_num_threads(1)
    w_bits, a_bits = (int(b) for b in args.bits.split(","))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name in args.models:
        model = gzsq.load_model(name, str(WEIGHTS[name])) if name in WEIGHTS else gzsq.load_model(name)
        data = CIFAR_TEST if name.startswith("cifar10") else IMAGENET_SAMPLE
        for seed in args.seeds:
            for loss in args.losses:
                t = time.time()
                row = gzsq.evaluate(model, data,
                                    calibration=gzsq.CalibrationConfig(source=args.calib, seed=seed, setting="bn-free"),
                                    quant=gzsq.QuantConfig.starting_point(w_bits, a_bits),
                                    reconstruction=gzsq.ReconstructConfig(loss=loss))
                line = {"model": name, "w_bits": w_bits, "a_bits": a_bits, "calib": row.get("calib"), "seed": seed,
                        "loss": loss, "fp32_top1": row["fp32_top1"], "top1": row["top1"],
                        "agreement": row["agreement"], "wall_s": round(time.time() - t), "commit": commit}
                print(json.dumps(line), flush=True)
                with OUT.open("a") as f:
                    f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
