"""How smooth and how coloured are distilled images, against real ones?

For each (model, overrides) this distills the set a preset makes (one thread, seed S; `overrides` replace the preset's
DistillConfig fields, as the recipes of recon_images.py and lite_int8_levers.py do) and prints, for the optimized images
only (not their copies) and for 64 real images (224×224: the sample's first, 64 classes) or 256 (32×32: CIFAR-10's test
set at an even stride, every class) of the evaluation set: the total variation (mean |difference| of neighbouring
pixels, both directions added), the same over the colour channels' mean std (white noise ≈ 2.3), the slope of the
amplitude spectrum (`spectral_slope`), each colour channel's mean and std, and the mean correlation between colour
channels, all in the model's normalized input space. One line per set, appended to OUT.

    python experiments/image_smoothness.py --model efficientnet-lite0 --preset local-long \\
        --variants tv_weight=0,centre_colour=False - --out results/fidelity/image_smoothness.txt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gzsq.config import CalibrationConfig
from gzsq.data import load_eval_set
from gzsq.distillation.loop import spatial_frequency
from gzsq.distillation.losses import total_variation
from gzsq.models import load_model
from gzsq.sources.calibrate import calibrate

from assets import every_class

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
WEIGHTS = {"mobilenet-v2": SHARED / "models" / "imagenet" / "mobilenet_v2-b0353104.pth",
           **{f"cifar10-resnet{n}": SHARED / "models" / "cifar10" / f"resnet{n}.th" for n in (20, 32, 44)}}


def spectral_slope(x: torch.Tensor) -> float:
    """Log-log slope of the images' amplitude spectrum over spatial frequency (each image's mean removed; frequencies
    from 2 cycles per image to a quarter of the sampling rate): photos ≈ −1 to −1.5, white noise 0."""
    h, w = x.shape[-2:]
    amplitude = torch.fft.rfft2(x - x.mean((-2, -1), keepdim=True)).abs().mean((0, 1))
    f = spatial_frequency(h, w)
    keep = (f >= 2.0 / max(h, w)) & (f <= 0.25)
    logf, loga = f[keep].log(), amplitude[keep].log()
    return float(((logf - logf.mean()) * (loga - loga.mean())).sum() / ((logf - logf.mean()) ** 2).sum())


def describe(x: torch.Tensor) -> dict:
    tv = float(total_variation(x))
    return {"images": len(x), "tv": round(tv, 3), "tv_over_channel_std": round(tv / float(x.std((0, 2, 3)).mean()), 3),
            "spectral_slope": round(spectral_slope(x), 3),
            "channel_mean": [round(v, 3) for v in x.mean((0, 2, 3)).tolist()],
            "channel_std": [round(v, 3) for v in x.std((0, 2, 3)).tolist()],
            "colour_correlation": round(colour_correlation(x), 3)}


def colour_correlation(x: torch.Tensor) -> float:
    """Mean correlation between the colour channels over all pixels, each image's channel means removed
    (photos ≈ 0.9)."""
    c = (x - x.mean((2, 3), keepdim=True)).transpose(0, 1).reshape(x.shape[1], -1)
    r = torch.corrcoef(c)
    return float(r[~torch.eye(len(r), dtype=torch.bool)].mean())


def parse(variant: str) -> tuple:
    if variant == "-":
        return ()
    out = []
    for item in variant.split(","):
        key, value = item.split("=")
        out.append((key, {"True": True, "False": False}.get(value) if value in ("True", "False") else float(value)))
    return tuple(out)


def real_images(images: torch.Tensor, n: int, imagenet: bool) -> torch.Tensor:
    """The sample's first `n` (one class each); CIFAR-10's test set is stored class by class, so an even stride."""
    return images[:n] if imagenet else every_class(images, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--preset", default="local-long")
    ap.add_argument("--variants", nargs="*", default=["-"],
                    help="k=v[,k=v] overrides per set; '-': none; the flag with no value: the real row alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    weights = WEIGHTS.get(args.model)
    model = load_model(args.model, weights=str(weights)) if weights else load_model(args.model)
    imagenet = model.input_spec.size > 64
    data = SHARED / "data" / ("imagenet-sample" if imagenet else "cifar10/test.npz")
    n = 64 if imagenet else 256
    lines = [{"model": args.model, "set": "real", "data": str(data.relative_to(SHARED.parent)),
              **describe(real_images(load_eval_set(model, data).images, n, imagenet))}]
    for variant in args.variants:
        start = time.perf_counter()
        calib = calibrate(model, CalibrationConfig(n_images=n, seed=args.seed, preset=args.preset),
                          overrides=parse(variant))
        optimized = calib.log.get("optimized_images", len(calib.images))
        lines.append({"model": args.model, "set": f"gzsq {args.preset} {variant}", "seed": args.seed,
                      **describe(calib.images[:optimized]), "seconds": round(time.perf_counter() - start, 1)})
    with open(args.out, "a") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
            print(json.dumps(line))


if __name__ == "__main__":
    main()
