"""Reconstruction settings on the calibration set the W4A4 job really uses (gzsq, preset auto = half-local).

The rounding learned on gzsq's images, not their activation ranges, is what costs W4A4 accuracy against real
images (results/lowbit/recon_act_widths.jsonl). Settings that trade fit for flatness might carry over better from
distilled to real inputs: QDrop's drop probability, the rounding regulariser's weight. Each run: the calibration set
(made once per model, source and seed), MSE-clipped W4A4 start, `reconstruct` with `ReconstructConfig(**overrides)`,
simulator top-1 on all 10 000 CIFAR-10 test images.

    python experiments/recon_settings.py --models cifar10-resnet20 --settings drop_prob=0.5 drop_prob=0.75 --seeds 0
    python experiments/recon_settings.py --calib real --settings drop_prob=0.75   # the same on real training images
    python experiments/recon_settings.py --models cifar10-resnet44 --quant "weight_clip='maxabs'"   # QuantConfig
    python experiments/recon_settings.py --models cifar10-resnet56 --calib gaussian --settings iters=100
    python experiments/recon_settings.py --models cifar10-resnet56 --preset mixed --settings iters=100
    python experiments/recon_settings.py --models cifar10-resnet56 --calib-overrides noise_fraction=0.34   # thirds

`--quant` overrides fields of the MSE-clipped start. The rows with `"quant": "equalize=True"` ran from checkouts of
commits cde3837 and 098b3fb (`QuantConfig.equalize`, since removed; results/lowbit/what_limits_reconstruction.md §26).

One JSON line per run goes to results/lowbit/recon_settings.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from pathlib import Path

import torch

import gzsq
from assets import CIFAR_TEST, CIFAR_TRAIN, WEIGHTS, cifar_checkpoint
from overrides import parse_overrides
from gzsq.config import ImagesFor
from gzsq.data import load_eval_set
from gzsq.metrics import predict, top1
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.calibrate import calibrate

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "recon_settings.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cifar10-resnet20"])
    p.add_argument("--settings", nargs="+", default=["drop_prob=0.5"], help="ReconstructConfig overrides, k=v[,k=v]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--calib", default="gzsq", choices=["gzsq", "real", "gaussian"])
    p.add_argument("--preset", default="auto", help="gzsq preset (auto: what the W4A4 job picks, half-local)")
    p.add_argument("--calib-overrides", default="", help="gzsq settings that replace the preset's, k=v[,k=v]")
    p.add_argument("--bits", default="4,4")
    p.add_argument("--quant", default="", help="QuantConfig overrides of the MSE-clipped start, k=v[,k=v]")
    args = p.parse_args()
    torch.set_num_threads(1)
    w_bits, a_bits = (int(b) for b in args.bits.split(","))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name in args.models:
        model = gzsq.load_model(name, str(WEIGHTS[name]) if name in WEIGHTS else cifar_checkpoint(name))
        data = load_eval_set(model, CIFAR_TEST)
        fp32 = predict(model, data.images)
        for seed in args.seeds:
            config = gzsq.CalibrationConfig(source=args.calib, seed=seed, setting="bn-free", n_images=256,
                                            preset=args.preset, data=str(CIFAR_TRAIN) if args.calib == "real" else None)
            config = config.resolved(model, ImagesFor(reconstructing=True))
            calib = calibrate(model, config, overrides=parse_overrides(args.calib_overrides)).images
            start = quantize(model, calib, dataclasses.replace(gzsq.QuantConfig.starting_point(w_bits, a_bits),
                                                              **dict(parse_overrides(args.quant))))
            for setting in args.settings:
                t = time.time()
                sim = reconstruct(model, start, calib, gzsq.ReconstructConfig(**dict(parse_overrides(setting))), seed=seed)
                pred = predict(sim, data.images)
                line = {"model": name, "w_bits": w_bits, "a_bits": a_bits, "seed": seed,
                        "calib": f"gzsq-{config.preset}" if args.calib == "gzsq" else args.calib, "setting": setting,
                        **({"quant": args.quant} if args.quant else {}),
                        **({"calib_overrides": args.calib_overrides} if args.calib_overrides else {}),
                        "top1": round(top1(pred, data.labels), 2),
                        "agreement": round(float((pred == fp32).mean() * 100), 2), "wall_s": round(time.time() - t),
                        "commit": commit}
                print(json.dumps(line), flush=True)
                with OUT.open("a") as f:
                    f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
