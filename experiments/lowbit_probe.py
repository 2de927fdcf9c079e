"""What limits block reconstruction on a 224×224 model: the same W/A reconstruction (defaults of
`ReconstructConfig`, MSE-clipped start) calibrated on 64 images distilled from the weights, or on 64 real
images (the first 64 of the ImageNet sample), both scored by the simulator on the other 436 sample images.

    python experiments/lowbit_probe.py --model efficientnet-lite0 --calib real --seed 0

Appends one JSON line (the command, settings, top-1, agreement, seconds) to results/lowbit/probe.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from assets import IMAGENET_SAMPLE, MOBILENET_V2  # noqa: E402

WEIGHTS = {"mobilenet-v2": MOBILENET_V2}
OUT = ROOT / "results" / "lowbit" / "probe.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--calib", choices=["gzsq", "real"], default="real")
    p.add_argument("--bits", default="4,8", help="W,A")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    import gzsq
    from gzsq.config import CalibrationConfig, QuantConfig, ReconstructConfig
    from gzsq.data import load_eval_set
    from gzsq.metrics import agreement, predict, top1
    from gzsq.models import load_model
    from gzsq.quantization.sim import quantize
    from gzsq.reconstruct import reconstruct

    w, a = map(int, args.bits.split(","))
    model = load_model(args.model, WEIGHTS.get(args.model))
    model.eval()
    data = load_eval_set(model, IMAGENET_SAMPLE)
    held = slice(64, None)
    t = time.perf_counter()
    if args.calib == "real":
        calib = data.images[:64].clone()
    else:
        calib = gzsq.distill(model, calibration=CalibrationConfig(n_images=64, seed=args.seed))
        calib = calib.images if hasattr(calib, "images") else calib
    seconds_calib = time.perf_counter() - t
    fp32 = predict(model, data.images[held])
    labels = data.labels[held]
    sim = quantize(model, calib, QuantConfig.starting_point(w, a))
    rtn = predict(sim, data.images[held])
    t = time.perf_counter()
    out = reconstruct(model, sim, calib, ReconstructConfig(), seed=args.seed)
    seconds = time.perf_counter() - t
    pred = predict(out, data.images[held])
    row = {"command": "python experiments/lowbit_probe.py " + " ".join(sys.argv[1:]), "model": args.model,
           "calib": args.calib, "w_bits": w, "a_bits": a, "seed": args.seed, "images": len(labels),
           "config": out.reconstruction["config"], "fp32_top1": round(top1(fp32, labels), 2),
           "rtn_top1": round(top1(rtn, labels), 2), "top1": round(top1(pred, labels), 2),
           "agreement": round(agreement(pred, fp32), 2), "seconds_calibration": round(seconds_calib, 1),
           "seconds_reconstruct": round(seconds, 1)}
    print(json.dumps(row), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
