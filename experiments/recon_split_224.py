"""Where along the network do gzsq's images fail the 224×224 W4A8 reconstruction? Real images reach 76.8 on
MobileNetV2 where gzsq's reach 62.8 (seed 0, simulator, results/lowbit/recon_settings_224.md). Here the first k
units learn their rounding on one source and the rest on the other (the reconstruction's own resume: the units
done are kept, the next ones are captured and trained on the second source's images).

    python experiments/recon_split_224.py --model mobilenet-v2 --first gzsq --then real --splits 0.33 0.67

Protocol as experiments/recon_settings_224.py: `gzsq.quantization.sim.quantize` at W4A8 from the MSE-clipped
start on the first source's images, `reconstruct` with the command's defaults for 224×224 images, 64 calibration
images (gzsq: preset `local-long`, what `auto` picks for this job; real: 64 of the even rows of the 500-image
sample, fold A), simulator top-1 and agreement on the odd rows (fold B, 250 images; one image is 0.4 pt). One
thread. The first source's whole reconstruction runs once, its progress kept after each split; each split then
resumes on the second source. One JSON line per result is appended to results/lowbit/recon_split_224.jsonl.
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
from gzsq.config import QuantConfig, ReconstructConfig
from gzsq.data import load_eval_set
from gzsq.metrics import agreement, predict, top1
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources import calibrate

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "recon_split_224.jsonl"


def images_of(model, source: str, fold_a: Path, seed: int) -> torch.Tensor:
    config = gzsq.CalibrationConfig(source=source, n_images=64, seed=seed, setting="bn-free",
                                    preset="local-long" if source == "gzsq" else "auto",
                                    data=str(fold_a) if source == "real" else None)
    return calibrate(model, config).images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet-v2")
    p.add_argument("--first", default="gzsq", choices=["gzsq", "real", "gaussian"])
    p.add_argument("--then", default="real", choices=["gzsq", "real", "gaussian"])
    p.add_argument("--splits", type=float, nargs="+", default=[0.33, 0.67], help="shares of the units on --first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=500, help="steps per unit (fewer: a quick check of the script)")
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    model = gzsq.load_model(args.model, str(WEIGHTS[args.model])) if args.model in WEIGHTS else gzsq.load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folds = make_folds(Path(tmp), IMAGENET_SAMPLE)
        eval_set = load_eval_set(model, folds["B"])
        first = images_of(model, args.first, folds["A"], args.seed)
        then = images_of(model, args.then, folds["A"], args.seed)
        fp32 = predict(model, eval_set.images)
        sim = quantize(model, first, QuantConfig.starting_point(4, 8))
        config = ReconstructConfig(iters=args.iters)
        kept: dict[int, dict] = {}
        total = [0]

        def at(share: float) -> int:
            return max(1, min(total[0] - 1, round(share * total[0])))

        def keep(progress: dict) -> None:
            total[0] = progress["total_units"]
            if len(progress["units"]) in {at(share) for share in args.splits}:
                kept[len(progress["units"])] = progress

        def record(label: str, done: int, result, seconds: float) -> None:
            pred = predict(result, eval_set.images)
            line = {"model": args.model, "first": args.first, "then": args.then, "seed": args.seed,
                    "units_on_first": done, "units": total[0], "split": label,
                    "fp32_top1": round(top1(fp32, eval_set.labels), 2), "top1": round(top1(pred, eval_set.labels), 2),
                    "agreement": round(agreement(pred, fp32), 2), "seconds": round(seconds), "commit": commit}
            print(json.dumps(line), flush=True)
            with OUT.open("a") as f:
                f.write(json.dumps(line) + "\n")

        t = time.time()
        whole = reconstruct(model, sim, first, config, seed=args.seed, on_unit=keep)
        record("all on first", total[0], whole, time.time() - t)
        for share in args.splits:
            done = at(share)
            t = time.time()
            result = reconstruct(model, sim, then, config, seed=args.seed, resume=kept[done])
            record(f"{share:g}", done, result, time.time() - t)


if __name__ == "__main__":
    main()
