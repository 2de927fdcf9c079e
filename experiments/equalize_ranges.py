"""Why activation equalization fails on distilled images: per-channel maxima that do not carry over.

    python experiments/equalize_ranges.py --model mobilenet-v2 --seed 0 > results/lowbit/equalize_ranges.txt

Equalization (gzsq.equalize) scales each channel of a tensor between two layers up by s_i, chosen from the channel's
largest value r_i on the calibration images, and under ReLU6 by at most 6 / r_i. If real images drive a channel
further than the calibration images did, the scaled channel passes 6 and is clipped where the float network is not.
For every pair this prints, at the W6A6 bit widths, how the scales chosen on gzsq's reconstruction images (the
images `gzsq evaluate --reconstruct block` learns on at W6A6, seed as given) and on 64 real images (fold A: even rows
of the sample) fare on the real images of fold B (odd rows): the share of channels that the scaled ReLU6 clips
there (their largest fold-B value times s_i passes 6), and the ratio of each channel's largest value on fold B to its value on the calibration images. One thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

import gzsq
from assets import IMAGENET_SAMPLE, load_zoo_model
from imagenet_int8 import make_folds
from gzsq.config import ImagesFor
from gzsq.data import load_eval_set
from gzsq.equalize import channel_ranges, equalize, find_pairs
from gzsq.fold import fold_bn
from gzsq.sources.calibrate import calibrate


def summarize(gm, pairs, scales, calib_top, real_images) -> list[tuple[str, float, float, float, float]]:
    """Per pair: (second layer, largest scale, share of channels the scaled cap clips on fold B, median and 90th
    percentile over channels of fold-B max / calibration max)."""
    seconds = [second for _, second, _ in pairs]
    real = channel_ranges(gm, seconds, real_images)
    rows = []
    for first, second, cap in pairs:
        s, r_cal, r_real = scales[(first, second)], calib_top[second][0], real[second][0]
        live = r_cal > 0
        ratio = (r_real[live] / r_cal[live]).double()
        clipped = float(((s * r_real) > cap).double().mean()) if cap is not None else 0.0
        rows.append((second, float(s.max()), clipped, float(ratio.median()), float(torch.quantile(ratio, 0.9))))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet-v2")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_zoo_model(args.model).eval()
    quant = gzsq.QuantConfig.starting_point(6, 6)
    config = gzsq.CalibrationConfig(source="gzsq", n_images=64, seed=args.seed, setting="bn-free")
    config = config.resolved(model, ImagesFor.job(quant, gzsq.ReconstructConfig()))
    distilled = calibrate(model, config).images
    with tempfile.TemporaryDirectory() as tmp:
        folds = make_folds(Path(tmp), IMAGENET_SAMPLE)
        fold_a = load_eval_set(model, folds["A"], labels_must_fit=False).images[:64]
        fold_b = load_eval_set(model, folds["B"], labels_must_fit=False).images
    print(f"# python experiments/equalize_ranges.py {' '.join(sys.argv[1:])}")
    print(f"# gzsq preset {config.preset}, seed {args.seed}; real calibration: 64 images of fold A; measured on "
          f"fold B ({len(fold_b)} images)")
    results = {}
    for name, images in (("gzsq", distilled), ("real A", fold_a)):
        gm = fold_bn(model)
        pairs = find_pairs(gm)
        calib_top = channel_ranges(gm, [second for _, second, _ in pairs], images)
        with torch.no_grad():
            scales = equalize(fold_bn(model), images, quant.w_bits, quant.a_bits)
        results[name] = summarize(gm, pairs, scales, calib_top, fold_b)
    print("\n| second layer | gzsq: largest s | gzsq: channels clipped on fold B | gzsq: fold-B max / calib "
          "max, median / p90 | real A: largest s | real A: clipped | real A: ratio median / p90 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for g, r in zip(results["gzsq"], results["real A"]):
        print(f"| {g[0]} | {g[1]:.1f} | {100 * g[2]:.2f} % | {g[3]:.2f} / {g[4]:.2f} | {r[1]:.1f} | "
              f"{100 * r[2]:.2f} % | {r[3]:.2f} / {r[4]:.2f} |")
    for name, rows in results.items():
        clipped = sum(row[2] for row in rows) / len(rows)
        ratio = sorted(row[3] for row in rows)[len(rows) // 2]
        print(f"\n{name}: mean over pairs of the channels clipped on fold B {100 * clipped:.2f} %; median over pairs of the "
              f"per-channel median fold-B max / calibration max {ratio:.2f}")


if __name__ == "__main__":
    main()
