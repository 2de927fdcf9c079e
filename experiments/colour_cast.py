"""Does the colour of the distilled images matter to learned rounding at 224×224?

EfficientNet-Lite0's `local-long` images come out with a strong colour cast (per-channel means of the
normalized pixels about +0.2 / −0.45 / +0.5; real images' within ±0.25 of 0), MobileNetV2's do not. This
distills the set the W4A8 job uses (`gzsq distill --preset local-long`, one thread), writes a copy whose every
colour channel is shifted to the mean real photos have (`--to real`: the mean over the first 64 images of the
evaluation sample, an oracle that only measures; `--to zero`: the normalization's centre) and clamped to the
model's pixel range, prints both sets' channel statistics, then runs the W4A8 job on the shifted copy through
experiments/cli_224_runs.sh (ONNX Runtime on the 500-image sample), appending command and report to OUT.

    python experiments/colour_cast.py --model efficientnet-lite0 --seed 0 --to zero --out results/lowbit/colour_cast.txt

The row in results/lowbit/colour_cast.txt ran at commit 538388e, before `local-long` got its smoothness prior and
its own centring (DistillConfig.tv_weight, centre_colour); run it from there to reproduce it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from gzsq.data import load_eval_set
from gzsq.models import load_model
from gzsq.sources.saved import load_calibration

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
WEIGHTS = {"mobilenet-v2": ROOT.parent / "shared" / "models" / "imagenet" / "mobilenet_v2-b0353104.pth"}


def channel_stats(x: torch.Tensor) -> dict:
    return {"mean": [round(v, 3) for v in x.mean((0, 2, 3)).tolist()],
            "std": [round(v, 3) for v in x.std((0, 2, 3)).tolist()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--to", choices=("zero", "real"), default="zero")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    gzsq = str(Path(sys.executable).parent / "gzsq")
    weights = ["--weights", str(WEIGHTS[args.model])] if args.model in WEIGHTS else []
    model = load_model(args.model, weights=str(WEIGHTS[args.model])) if weights else load_model(args.model)
    spec = model.input_spec
    lo = torch.tensor([(0 - m) / s for m, s in zip(spec.mean, spec.std)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(spec.mean, spec.std)]).view(1, 3, 1, 1)
    real = load_eval_set(model, SAMPLE).images[:64]
    with tempfile.TemporaryDirectory() as work:
        made = Path(work) / "set.npz"
        subprocess.run([gzsq, "distill", args.model, *weights, "--preset", "local-long", "--n-calib", "64",
                        "--seed", str(args.seed), "--threads", "1", "-q", "-o", str(made)], check=True)
        calib = load_calibration(made)
        x = calib.images
        target = real.mean((0, 2, 3)) if args.to == "real" else torch.zeros(3)
        shifted = torch.max(torch.min(x - x.mean((0, 2, 3), keepdim=True) + target.view(1, 3, 1, 1), hi), lo)
        stats = {"model": args.model, "seed": args.seed, "to": args.to, "distilled": channel_stats(x),
                 "shifted": channel_stats(shifted), "real (64 of the sample)": channel_stats(real),
                 "pixels clamped": round(float((shifted != x - x.mean((0, 2, 3), keepdim=True)
                                                + target.view(1, 3, 1, 1)).float().mean()), 4)}
        with np.load(made) as z:
            info = z["info"]
        out_set = Path(work) / f"{args.model}-shifted.npz"
        np.savez(out_set, images=shifted.numpy().astype(np.float32), info=info)
        with open(args.out, "a") as f:
            f.write("# " + json.dumps(stats) + "\n")
        subprocess.run(["bash", str(ROOT / "experiments" / "cli_224_runs.sh"), str(Path(args.out).resolve()),
                        args.model, str(args.seed), "--w-bits", "4", "--a-bits", "8", "--calib-set", str(out_set)],
                       check=True, env={**os.environ, "GZSQ": gzsq})


if __name__ == "__main__":
    main()
