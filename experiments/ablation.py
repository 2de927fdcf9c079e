"""The paper's open choices, measured: what picks gzsq's `default` preset (docs/how-it-works.md).

    python experiments/ablation.py                        # ResNet-20 and EfficientNet-Lite0
    python experiments/ablation.py --models cifar10-resnet20 --seeds 0,1
    python experiments/ablation.py --out results/ablation_levers --models mobilenet-v2 \
        --variants real,gaussian,default --seeds 0,1,2 --threads 1

BN-free setting (gzsq only ever reads the folded weights), observer min/max unless the
variant says otherwise, full evaluation sets; W6A6 / W4A8 / W4A4 on CIFAR, W8A8 / W6A6 on
ImageNet (4-bit weights collapse there whatever the calibration), or `--bits`. Each
variant is a set of overrides on a preset; gaussian and real rows are the references.
Resumable: OUT.csv (default results/ablation.csv) keeps finished rows; OUT.md is
regenerated from it at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from assets import IMAGENET_SAMPLE, MOBILENET_V2

from gzsq.atomic import atomic_write_text
from gzsq.config import CalibrationConfig, QuantConfig
from gzsq.evaluation import calibration_folds, evaluate_folds, load_eval_set, predict
from gzsq.models import load_model
from run_accuracy import model_table, parse_bits, read_rows, write_rows

ROOT = Path(__file__).resolve().parents[1]

BITS = [(6, 6), (4, 8), (4, 4)]  # CIFAR's default
IMAGENET_BITS = [(8, 8), (6, 6)]
ALL_BITS = [(8, 8), (6, 6), (4, 8), (4, 4)]  # the order of table columns
# name → (source, preset, overrides, what it tests)
P30 = (("iterations", 30),)  # paper variants get the default's step budget: a comparison of choices, not compute
VARIANTS = {
    "real": ("real", "", (), "upper bound: 256 training images (ImageNet: other fold)"),
    "gaussian": ("gaussian", "", (), "noise baseline"),
    "thorough": ("gzsq", "thorough", (), "moments + ReLU-aware + ρ=1 targets, σ floor, KL, pixels clamped, 30 steps "
                                         "(every image optimized)"),
    "default": ("gzsq", "default", (), "thorough's targets and loss, 20 steps on 256 CIFAR images' worth of pixels"),
    "default/coherence=0": ("gzsq", "default", (("coherence", 0.0),), "independent-pixel variance"),
    "thorough/loss=z": ("gzsq", "thorough", (("loss", "z"),), "the paper's L_Z on the default targets"),
    "thorough/loss=l2": ("gzsq", "thorough", (("loss", "l2"),), "L2 on the default targets"),
    "thorough/paper-targets": ("gzsq", "thorough", (("rule", "paper"), ("relu_aware", False), ("std_floor", 0.0)),
                              "paper recursion, default distillation"),
    "thorough/no-relu-aware": ("gzsq", "thorough", (("relu_aware", False),), "ReLU ignored in propagation"),
    "thorough/coherence=0": ("gzsq", "thorough", (("coherence", 0.0),), "independent-pixel variance"),
    "thorough/no-std-floor": ("gzsq", "thorough", (("std_floor", 0.0),), "no floor on target stds"),
    "thorough/no-clamp": ("gzsq", "thorough", (("clamp_pixels", False),), "pixels free to leave [0, 1]"),
    "thorough/+ce+tv": ("gzsq", "thorough", (("ce_weight", 0.5), ("tv_weight", 0.05)),
                       "'enriched': CE to random classes + TV prior"),
    "thorough/10-steps": ("gzsq", "thorough", (("iterations", 10),), "fewer steps"),
    "thorough/64-distilled": ("gzsq", "thorough", (("distill_images", 64),), "distill 64, expand by flips/shifts"),
    "paper/30-steps": ("gzsq", "paper", P30, "the paper literally: per-channel SE+ESA(mean+min), data-flow, L_Z"),
    "paper/per-layer": ("gzsq", "paper", P30 + (("per_channel", False),), "scalar targets per layer"),
    "paper/sequential": ("gzsq", "paper", P30 + (("order", "sequential"),), "layer n reads layer n−1 in module order"),
    "paper/esa=min": ("gzsq", "paper", P30 + (("esa", "min"),), "ESA candidate"),
    "paper/esa=mean": ("gzsq", "paper", P30 + (("esa", "mean"),), "ESA candidate"),
    "paper/esa=max": ("gzsq", "paper", P30 + (("esa", "max"),), "ESA candidate"),
    "paper/relu-aware": ("gzsq", "paper", P30 + (("relu_aware", True),), "rectified-Gaussian ReLU in the recursion"),
    "paper/kl": ("gzsq", "paper", P30 + (("loss", "kl"),), "Gaussian KL instead of L_Z"),
    "paper/l2": ("gzsq", "paper", P30 + (("loss", "l2"),), "L2 on mean and std instead of L_Z"),
    "paper": ("gzsq", "paper", (), "the paper preset as shipped: lr 0.5, up to 500 steps, early stop"),
    "thorough/100-steps": ("gzsq", "thorough", (("iterations", 100),), "more steps"),
    # speed levers: fewer optimized images, expanded by flips/shifts, and fewer steps
    "thorough/20-steps": ("gzsq", "thorough", (("iterations", 20),), "20 steps instead of 30"),
    "thorough/128-distilled": ("gzsq", "thorough", (("distill_images", 128),), "distill 128, expand by flips/shifts"),
    "thorough/16-distilled-20-steps": ("gzsq", "thorough", (("distill_images", 16), ("iterations", 20)),
                                      "distill 16 for 20 steps, expand by flips/shifts"),
    "thorough/128-distilled-20-steps": ("gzsq", "thorough", (("distill_images", 128), ("iterations", 20)),
                                       "distill 128 for 20 steps, expand (the `fast` preset's CIFAR recipe)"),
    "thorough/coherence=0/128-distilled-20-steps": ("gzsq", "thorough", (("coherence", 0.0), ("distill_images", 128),
                                                                       ("iterations", 20)),
                                                   "independent-pixel variance, 128 distilled, 20 steps"),
    "thorough/32-distilled-20-steps": ("gzsq", "thorough", (("distill_images", 32), ("iterations", 20)),
                                      "distill 32 for 20 steps, expand by flips/shifts"),
    # The same choices at the default's budget (20 steps on 256 CIFAR images' worth of pixels: 16 images at
    # 224x224), which is what EfficientNet-Lite0 is measured with: a comparison of choices at equal compute.
    "default/paper-recipe": ("gzsq", "paper", (("iterations", 20), ("distill_pixels", 256 * 32 * 32),
                                               ("batch_size", 256), ("early_stop_patience", 0)),
                             "the paper's targets and L_Z (lr 0.5) on the default's budget"),
    "default/paper-targets": ("gzsq", "default", (("rule", "paper"), ("relu_aware", False), ("std_floor", 0.0)),
                              "paper recursion, default distillation"),
    "default/loss=z": ("gzsq", "default", (("loss", "z"),), "the paper's L_Z on the default targets"),
    "default/loss=l2": ("gzsq", "default", (("loss", "l2"),), "L2 on the default targets"),
    "default/no-relu-aware": ("gzsq", "default", (("relu_aware", False),), "ReLU ignored in propagation"),
    "default/no-std-floor": ("gzsq", "default", (("std_floor", 0.0),), "no floor on target stds"),
    "default/no-clamp": ("gzsq", "default", (("clamp_pixels", False),), "pixels free to leave the valid range"),
}
# Levers for calibration fidelity (results/fidelity/): targets at depthwise convs, more distinct images at 224²,
# and the observer that serves real images best (their min/max follows outliers).
VARIANTS.update({
    "real/percentile": ("real", "", (), "real images, 99.99th-percentile observer (min/max follows their outliers)"),
    "default/dw-coherence=0.5": ("gzsq", "default", (("depthwise_coherence", 0.5),),
                                 "depthwise convs' target variance with ρ=0.5 (ρ=1: their edge-like taps cancel)"),
    "default/40-steps": ("gzsq", "default", (("iterations", 40),),
                         "40 Adam steps instead of 20 (= preset `longer`): do deep layers get nearer their targets?"),
    "default/32-distilled": ("gzsq", "default", (("distill_images", 32),),
                             "32 distinct images optimized at 224² (default 16), the rest flips/shifts"),
})
# Levers for the BN-free CIFAR nets, whose distilled ranges are too narrow (results/fidelity/cifar10-vgg7-nf.md):
# observers on distilled data, and part of the set left as noise (results/ablation_bnfree.md).
VARIANTS.update({
    "default/percentile": ("gzsq", "default", (), "distilled images, 99.99th-percentile observer"),
    "default/mse": ("gzsq", "default", (), "distilled images, MSE observer (shrinks the min/max range)"),
    "default/noise-half": ("gzsq", "default", (("noise_fraction", 0.5),),
                           "128 distilled + 128 left as N(0, 1) noise: ranges about the wider of the two"),
    "default/noise-quarter": ("gzsq", "default", (("noise_fraction", 0.25),), "192 distilled + 64 noise"),
})
# Local targets (preset `local`): each layer's target from the images' current input statistics, so no layer
# inherits the errors of the layers before it (results/fidelity/deep_width_levers.txt).
VARIANTS.update({
    "default/local": ("gzsq", "default", (("local", True),),
                      "local targets (= preset `local`): the rule on each layer's current input statistics"),
    "default/half-local": ("gzsq", "default", (("local", True), ("local_fraction", 0.5)),
                           "half the set distilled with local targets, half with propagated ones"),
})
# Variants that change the quantizer, not the calibration images: QuantConfig overrides.
QUANT_OVERRIDES: dict[str, dict] = {"real/percentile": {"observer": "percentile"},
                                    "default/percentile": {"observer": "percentile"},
                                    "default/mse": {"observer": "mse"}}
LITE_VARIANTS = ["real", "gaussian", "default", "default/paper-recipe", "default/paper-targets", "default/loss=z",
                 "default/loss=l2", "default/no-relu-aware", "default/coherence=0", "default/no-std-floor",
                 "default/no-clamp"]
COLUMNS = ["model", "variant", "w_bits", "a_bits", "seed", "fp32_top1", "top1", "agreement", "distill_seconds",
           "iterations"]


def read(path: Path) -> list[dict]:
    return read_rows(path)


def write(path: Path, rows: list[dict]) -> None:
    write_rows(path, rows, COLUMNS)


def _cell(values: list[float]) -> str:
    m = statistics.mean(values)
    return f"{m:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{m:.2f}"


def render(rows: list[dict], stem: str = "results/ablation", command: str = "") -> str:
    if stem != "results/ablation":
        return render_levers(rows, stem, command)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["variant"], int(r["w_bits"]), int(r["a_bits"]))].append(r)
    out = ["# Ablation: the method's choices, measured (BN-free setting, observer min/max)", "",
           "Generated by `python experiments/ablation.py` (rows in `results/ablation.csv`). Top-1 % on the full",
           "evaluation set (CIFAR-10 test.npz 10 000 images; ImageNet sample 500 images, `real` 2-fold);",
           "256 calibration images (ImageNet 64); mean over the seeds listed. `Δnoise` columns: top-1 minus",
           "the gaussian row's. Seconds: distillation wall time on this 2-core machine while other jobs ran.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        out += [f"## {model}", "",
                "| variant | what it tests | " + " | ".join(f"W{w}A{a}" for w, a in BITS) + " | "
                + " | ".join(f"Δnoise W{w}A{a}" for w, a in BITS) + " | seeds | distill s | steps run |",
                "| --- | --- | " + " | ".join("---" for _ in BITS * 2) + " | --- | --- | --- |"]
        noise = {b: statistics.mean(float(r["top1"]) for r in groups[(model, "gaussian") + b]) for b in BITS
                 if groups.get((model, "gaussian") + b)}
        for variant in VARIANTS:
            cells, deltas, seeds, secs, iters = [], [], set(), [], []
            for b in BITS:
                g = groups.get((model, variant) + b, [])
                if g:
                    m = statistics.mean(float(r["top1"]) for r in g)
                    cells.append(f"{m:.2f}")
                    deltas.append(f"{m - noise[b]:+.2f}" if b in noise else "–")
                    seeds |= {r["seed"] for r in g}
                    secs += [float(r["distill_seconds"]) for r in g]
                    iters += [r["iterations"] for r in g]
                else:
                    cells.append("–")
                    deltas.append("–")
            if seeds:
                out.append(f"| {variant} | {VARIANTS[variant][3]} | " + " | ".join(cells) + " | " + " | ".join(deltas)
                           + f" | {','.join(sorted(str(s) for s in seeds))} | {statistics.mean(secs):.1f} | {iters[0]} |")
        out.append("")
    return "\n".join(out)


def render_levers(rows: list[dict], stem: str, command: str) -> str:
    """Top-1 and agreement, mean ± std over seeds, every bit-width a model was run at."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["variant"], int(r["w_bits"]), int(r["a_bits"]))].append(r)
    out = ["# Ablation: levers for gzsq's calibration fidelity (BN-free setting)", "",
           f"Generated by `{command or 'python experiments/ablation.py --out ' + stem}` (rows in `{stem}.csv`; "
           f"`bash experiments/{Path(stem).name}.sh` runs every row of {stem}.md). Full evaluation sets (CIFAR-10 test.npz 10 000 images; ImageNet "
           "sample 500 images, `real` 2-fold: calibrated on one half, evaluated on the other); 256 calibration "
           "images (ImageNet 64); simulated, per-channel weights, observer min/max unless the variant says "
           "otherwise. Cells: mean ± std over the seeds listed. Agreement: % of images whose quantized top-1 "
           "equals FP32's; `Δnoise agr.`: agreement minus the gaussian row's. Seconds: calibration wall time "
           "(distillation), one thread on 2 CPU cores shared with other jobs.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        bits = [b for b in ALL_BITS if any(k[0] == model and k[2:] == b for k in groups)]
        fp32 = next(r["fp32_top1"] for r in rows if r["model"] == model)
        out += [f"## {model} (FP32 top-1 {fp32})", "",
                "| variant | what it tests | " + " | ".join(f"top-1 W{w}A{a}" for w, a in bits) + " | "
                + " | ".join(f"agreement W{w}A{a}" for w, a in bits) + " | "
                + " | ".join(f"Δnoise agr. W{w}A{a}" for w, a in bits) + " | seeds | calib s |",
                "| --- | --- | " + " | ".join("---" for _ in bits * 3) + " | --- | --- |"]
        noise = {b: statistics.mean(float(r["agreement"]) for r in groups[(model, "gaussian") + b]) for b in bits
                 if groups.get((model, "gaussian") + b)}
        for variant in VARIANTS:
            tops, agrs, deltas, seeds, secs = [], [], [], set(), []
            for b in bits:
                g = groups.get((model, variant) + b, [])
                if not g:
                    tops.append("–")
                    agrs.append("–")
                    deltas.append("–")
                    continue
                tops.append(_cell([float(r["top1"]) for r in g]))
                agrs.append(_cell([float(r["agreement"]) for r in g]))
                m = statistics.mean(float(r["agreement"]) for r in g)
                deltas.append(f"{m - noise[b]:+.2f}" if b in noise else "–")
                seeds |= {str(r["seed"]) for r in g}
                secs += [float(r["distill_seconds"]) for r in g]
            if seeds:
                out.append(f"| {variant} | {VARIANTS[variant][3]} | " + " | ".join(tops + agrs + deltas)
                           + f" | {','.join(sorted(seeds))} | {statistics.mean(secs):.1f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cifar10-resnet20,efficientnet-lite0")
    p.add_argument("--variants", default="", help="comma list (default: all for CIFAR, a subset for ImageNet)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--out", default="results/ablation", help="csv/md path stem, relative to the repo")
    p.add_argument("--bits", default="", help="e.g. W8A8,W6A6 (default: W6A6,W4A8,W4A4 on CIFAR, "
                                              "W8A8,W6A6 on ImageNet)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = ROOT / f"{args.out}.csv"
    rows = read(out)
    if not args.render_only:
        done = {(r["model"], r["variant"], r["w_bits"], r["a_bits"], r["seed"]) for r in rows}
        table = model_table()
        table.setdefault("mobilenet-v2", dict(weights=MOBILENET_V2, data=IMAGENET_SAMPLE, calib_data=None, n=64))
        for name in args.models.split(","):
            spec = table[name]
            model = load_model(name, spec["weights"])
            variants = args.variants.split(",") if args.variants else (
                LITE_VARIANTS if spec["n"] == 64 else list(VARIANTS))
            bits = parse_bits(args.bits) if args.bits else (IMAGENET_BITS if spec["n"] == 64 else BITS)
            eval_set = fp32 = None
            for variant in variants:
                source, preset, overrides, _ = VARIANTS[variant]
                for seed in (int(s) for s in args.seeds.split(",")):
                    if all((name, variant, str(w), str(a), str(seed)) in done for w, a in bits):
                        continue
                    if eval_set is None:
                        eval_set = load_eval_set(model, spec["data"])
                        fp32 = predict(model, eval_set.images)
                    t = time.perf_counter()
                    calibration = CalibrationConfig(
                        source=source, n_images=spec["n"], seed=seed, setting="bn-free", preset=preset or "default",
                        data=str(spec["calib_data"]) if spec["calib_data"] else None)
                    folds = calibration_folds(model, eval_set, calibration, overrides=overrides)
                    seconds = time.perf_counter() - t
                    iters = folds[0].log.get("iterations", [""])
                    for w, a in bits:
                        if (name, variant, str(w), str(a), str(seed)) in done:
                            continue
                        config = QuantConfig(w_bits=w, a_bits=a, **QUANT_OVERRIDES.get(variant, {}))
                        metrics, _ = evaluate_folds(model, eval_set, folds, config, fp32)
                        rows.append(dict(model=name, variant=variant, w_bits=w, a_bits=a, seed=seed, **metrics,
                                         distill_seconds=round(seconds, 1), iterations=iters[0] if iters else ""))
                        print(f"{name} {variant:24s} seed {seed} W{w}A{a} {metrics['top1']:.2f} ({seconds:.0f}s)",
                              flush=True)
                    write(out, rows)
    text = render(rows, args.out)
    atomic_write_text(ROOT / f"{args.out}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
