"""Is the 224×224 reconstruction held back by its CPU-sized steps? Real images reach only 75–76 % at W4A8 on
MobileNetV2 and EfficientNet-Lite0 (FP32 83.4 / 88.8) with 8 images of 16×16 windows per step, 500 steps per unit.
Each run changes `ReconstructConfig` (batch_size, crop, iters…) and nothing else.

    python experiments/recon_settings_224.py --model mobilenet-v2 --calib real --settings batch_size=32 crop=32

Protocol, as experiments/gpu_budget_224.py: `gzsq.evaluate` (the simulator) at W4A8 from the MSE-clipped start,
64 calibration images (seed 0), setting bn-free; every run is evaluated on the odd rows of the 500-image sample
(fold B, 250 images; one image is 0.4 pt) and `real` draws its images from the even rows (fold A). One thread.
One JSON line per run is appended to results/lowbit/recon_settings_224.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import gzsq
from assets import IMAGENET_SAMPLE, WEIGHTS
from imagenet_int8 import make_folds
from overrides import parse_overrides

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "recon_settings_224.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet-v2")
    p.add_argument("--calib", default="real", choices=["gzsq", "gaussian", "real"])
    p.add_argument("--settings", nargs="+", default=["iters=500"], help="ReconstructConfig overrides, k=v[,k=v]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-calib", type=int, default=64)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    model = gzsq.load_model(args.model, str(WEIGHTS[args.model])) if args.model in WEIGHTS else gzsq.load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folds = make_folds(Path(tmp), IMAGENET_SAMPLE)
        for setting in args.settings:
            overrides = dict(parse_overrides(setting))
            calibration = gzsq.CalibrationConfig(source=args.calib, n_images=args.n_calib, seed=args.seed,
                                                 setting="bn-free",
                                                 data=str(folds["A"]) if args.calib == "real" else None)
            t = time.time()
            row = gzsq.evaluate(model, folds["B"], calibration=calibration,
                                quant=gzsq.QuantConfig.starting_point(4, 8),
                                reconstruction=gzsq.ReconstructConfig(**overrides))
            line = {"model": args.model, "calib": row.get("calib"), "seed": args.seed, "n_calib": args.n_calib,
                    "settings": overrides, "fp32_top1": row["fp32_top1"],
                    "top1": row["top1"], "agreement": row["agreement"], "wall_s": round(time.time() - t),
                    "seconds": row.get("seconds"), "commit": commit}
            print(json.dumps(line), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
