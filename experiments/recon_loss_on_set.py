"""One distilled set, several reconstruction losses: is it the loss that makes many distinct images fail?

At 224×224, 64 distinct distilled images make far worse W4A8 reconstruction data than 8 or 16 and their flips
(results/lowbit/what_limits_reconstruction.md §5). The default loss divides each output channel's error by its
variance over the calibration images in units with a residual add; a set of many distinct distilled images may give
some channels tiny variances and so huge weights. This distils the set once (a recipe of
experiments/recon_images.py, seed S, one thread) and quantizes it with each loss through the real command:

    gzsq quantize MODEL --w-bits W --a-bits A --calib-set SET.npz --reconstruct-loss LOSS \\
        --eval-data ../shared/data/imagenet-sample --threads 1 --seed S -o OUT.onnx --json

One JSON line per run in results/lowbit/recon_loss_on_set.jsonl.

    python experiments/recon_loss_on_set.py --model mobilenet-v2 --recipe local_it100_b16 --losses mse residual-normalized
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from lowbit_quantize import run_quantize  # noqa: E402
from recon_images import RECIPES, WEIGHTS, distill_set, eval_data  # noqa: E402

OUT = ROOT / "results" / "lowbit"
LOG = OUT / "recon_loss_on_set.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet-v2")
    p.add_argument("--recipe", default="local_it100_b16", choices=sorted(RECIPES))
    p.add_argument("--losses", nargs="+", default=["mse", "residual-normalized"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bits", default="4,8", help="W,A")
    args = p.parse_args()
    w, a = (int(b) for b in args.bits.split(","))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        calib_set = work / "set.npz"
        distill_seconds, _ = distill_set(args.model, args.recipe, args.seed, calib_set)
        print(f"{args.model} {args.recipe} seed {args.seed}: set distilled in {distill_seconds:.0f} s", flush=True)
        for loss in args.losses:
            name = f"{args.model}_w{w}a{a}_{args.recipe}_{loss}_s{args.seed}"
            weights = ["--weights", str(WEIGHTS[args.model])] if args.model in WEIGHTS else []
            cmd = ["gzsq", "quantize", args.model, *weights, "--w-bits", str(w), "--a-bits", str(a),
                   "--calib-set", str(calib_set), "--reconstruct-loss", loss, "--eval-data", str(eval_data(args.model)),
                   "--threads", "1", "--seed", str(args.seed), "-o", str(work / f"{name}.onnx"), "--json"]
            report, seconds, shown = run_quantize(cmd, name, work, work / "kept", ())
            e = report["evaluation"]
            row = {"model": args.model, "recipe": args.recipe, "seed": args.seed, "w_bits": w, "a_bits": a,
                   "loss": loss, "onnxruntime_top1": e["int8_top1"], "simulator_top1": e["simulator_top1"],
                   "agreement": e["agreement"], "fp32_top1": e["fp32_top1"],
                   "distill_seconds": round(distill_seconds, 1), "seconds": round(seconds, 1), "commit": commit,
                   "command": shown.replace(str(calib_set), "SET.npz")}
            with LOG.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name}: ORT {e['int8_top1']} agreement {e['agreement']} ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
