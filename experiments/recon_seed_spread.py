"""How much of a low-bit job's seed spread is the reconstruction's own, with the images held fixed?

Distils one calibration set as recon_images.py does (its recipe, seed --set-seed, one thread), then quantizes with it
once per --seeds value through the command, each time from a copy of the set that carries that seed in its metadata:
`gzsq quantize --calib-set` draws the reconstruction's batches, windows and QDrop masks from the set's seed, so the
images stay the same bit for bit and only the reconstruction's randomness changes. One JSON line per run is appended
to OUT (ONNX Runtime top-1 and agreement on recon_images.py's evaluation set).

    python experiments/recon_seed_spread.py --model mobilenet-v2 --recipe local_long_gs1 --set-seed 0 \\
        --seeds 0 1 2 --out results/lowbit/recon_seed_spread.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from lowbit_quantize import run_quantize  # noqa: E402
from recon_images import RECIPES, distill_set, quantize_command  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--recipe", default="local_long_gs1", choices=sorted(RECIPES), metavar="RECIPE",
                   help="a recipe of recon_images.py (default: local_long_gs1, the command's set at 224×224)")
    p.add_argument("--set-seed", type=int, default=0, help="the seed the set is distilled with")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the reconstruction's seeds")
    p.add_argument("--bits", default="4,8", help="W,A")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    w, a = (int(b) for b in args.bits.split(","))

    from gzsq.sources.saved import load_calibration, save_calibration

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        distilled = work / "set.npz"
        distill_seconds, _ = distill_set(args.model, args.recipe, args.set_seed, distilled)
        calib = load_calibration(distilled)
        digest = hashlib.md5(calib.images.numpy().tobytes()).hexdigest()
        meta = {"model": args.model, "setting": "bn-free", "preset": "default", "recipe": args.recipe}
        for seed in args.seeds:
            name = f"{args.model}_w{w}a{a}_{args.recipe}_set{args.set_seed}_recon{seed}"
            copy = work / f"{name}.npz"
            save_calibration(copy, dataclasses.replace(calib, seed=seed), meta)
            cmd = quantize_command(args.model, w, a, copy, seed, work / f"{name}.onnx")
            report, seconds, shown = run_quantize(cmd, name, work, work / "kept", ())
            e = report["evaluation"]
            row = {"model": args.model, "bits": f"W{w}A{a}", "recipe": args.recipe, "set_seed": args.set_seed,
                   "images_md5": digest, "distill_seconds": round(distill_seconds, 1), "recon_seed": seed,
                   "onnxruntime_top1": e["int8_top1"], "simulator_top1": e["simulator_top1"],
                   "agreement": e["agreement"], "fp32_top1": e["fp32_top1"], "seconds": round(seconds, 1),
                   "command": shown.replace(str(copy), f"SET_seed{seed}.npz")}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name}: ORT {e['int8_top1']} agreement {e['agreement']}", flush=True)


if __name__ == "__main__":
    main()
