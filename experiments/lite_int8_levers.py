"""Distillation levers for the int8 ONNX Runtime model of the 224×224 nets, where gzsq's deep residual-stream
ranges come out as narrow as noise's (0.3–0.5× real images', results/fidelity/efficientnet-lite0.md).

For each (model, lever, seed) the gzsq source distills the 64-image set from the BN-folded weights alone
(setting bn-free; a preset plus the overrides in LEVERS, applied by `gzsq.sources.gzsq.recipe_for`), on one
thread; the set is written as `gzsq distill` writes it, then the real command line quantizes with it:
    python -m gzsq quantize MODEL --calib-set SET.npz --eval-data ../shared/data/imagenet-sample \\
        --setting bn-free --threads 1 -o OUT.onnx --json
(ONNX Runtime int8, the default export, evaluated by ONNX Runtime on all 500 sample images: the same
protocol as results/imagenet_int8/, whose gzsq / noise / real rows are the reference). One row per run in
results/lite_int8_levers/runs.csv; README.md's table is rewritten from it.

    python experiments/lite_int8_levers.py --models efficientnet-lite0 --levers default ce1 --seeds 0
    python experiments/lite_int8_levers.py --table
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from lowbit_quantize import append_row, grouped_rows, run_quantize  # noqa: E402

OUT = ROOT / "results" / "lite_int8_levers"
CSV = OUT / "runs.csv"
from assets import IMAGENET_SAMPLE as SAMPLE, MOBILENET_V2  # noqa: E402

WEIGHTS = {"mobilenet-v2": MOBILENET_V2}

# name → (preset, overrides of it)
LEVERS: dict[str, tuple[str, tuple[tuple[str, object], ...]]] = {
    "default": ("default", ()),
    "longer": ("longer", ()),
    "ce0.1": ("default", (("ce_weight", 0.1),)),
    "ce1": ("default", (("ce_weight", 1.0),)),
    "longer_ce1": ("longer", (("ce_weight", 1.0),)),
    "longer_ce0.1": ("longer", (("ce_weight", 0.1),)),
    "it80": ("default", (("iterations", 80),)),
    "longer_64distinct": ("longer", (("distill_images", 64),)),
    "longer_pc0.9": ("longer", (("pixel_correlation", 0.9),)),
    "natural": ("default", (("init_spectrum", 1.0), ("init_colour", 0.85))),
    "longer_natural": ("longer", (("init_spectrum", 1.0), ("init_colour", 0.85))),
    "local": ("default", (("local", True),)),
    "longer_local": ("longer", (("local", True),)),
    # the targets matched image by image as well as over the batch (DistillConfig.per_image_weight)
    "local_pi1": ("default", (("local", True), ("per_image_weight", 1.0))),
    # half the set Gaussian noise beside the distilled half: min/max over both takes the wider of the two
    # sources' ranges per tensor (noise's residual-stream ranges are the wider on Lite2)
    "local_noise0.5": ("default", (("local", True), ("noise_fraction", 0.5))),
    # cross-entropy towards a random class per image beside the local targets: class-specific deep features
    "local_ce1": ("default", (("local", True), ("ce_weight", 1.0))),
    "local_ce3": ("default", (("local", True), ("ce_weight", 3.0))),
    # `local-classes` with the 48 copies of its 16 distilled images made as random crops resized back
    # (DistillConfig.expand_crop_scale) instead of flips and small shifts: zoomed-in copies, other ranges?
    "local_ce1_crop0.5": ("default", (("local", True), ("ce_weight", 1.0), ("expand_crop_scale", 0.5))),
    # `local-classes` distilled through a random crop of each image every step (DistillConfig.augment_crop_scale):
    # images that match their targets at many scales and positions rather than at one pixel grid
    "local_ce1_aug0.5": ("default", (("local", True), ("ce_weight", 1.0), ("augment_crop_scale", 0.5))),
    # `local-classes` with each colour channel shifted to mean 0 (DistillConfig.centre_colour), and with a
    # total-variation prior on the pixels (tv_weight 100): the two levers that lifted learned rounding at 224×224
    "local_ce1_centre": ("default", (("local", True), ("ce_weight", 1.0), ("centre_colour", True))),
    "local_ce1_tv100": ("default", (("local", True), ("ce_weight", 1.0), ("tv_weight", 100.0))),
    # `local-classes` with 32 / 64 distinct optimized images instead of 16 (the rest of the 64 are copies): the deep
    # residual adds' ranges come out narrow, and a maximum over more distinct images reaches further
    "local_ce1_d32": ("default", (("local", True), ("ce_weight", 1.0), ("distill_images", 32))),
    "local_ce1_d64": ("default", (("local", True), ("ce_weight", 1.0), ("distill_images", 64))),
    # `local-classes` with every step's pixel gradient shaped to a 1/f amplitude spectrum (DistillConfig.grad_spectrum)
    "local_ce1_gs1": ("default", (("local", True), ("ce_weight", 1.0), ("grad_spectrum", 1.0))),
    # `local-classes` with the optimized images started from dead-leaves pictures (DistillConfig.init_leaves):
    # flat regions, edges and occlusions that white noise lacks (the option was removed after measurement: run
    # this lever from a checkout of commit b43a7f4)
    "local_ce1_leaves": ("default", (("local", True), ("ce_weight", 1.0), ("init_leaves", True))),
    # `local-classes` with a reward for images whose per-image channel means differ along many directions
    # (DistillConfig.image_spread_weight): deep per-image variation, and with it the deep min/max ranges, grows
    # (the option was removed after measurement: run these from a checkout of commit 868a820)
    "local_ce1_spread0.1": ("default", (("local", True), ("ce_weight", 1.0), ("image_spread_weight", 0.1))),
    "local_ce1_spread1": ("default", (("local", True), ("ce_weight", 1.0), ("image_spread_weight", 1.0))),
    # the `local` images with a percentile observer instead of min/max (QUANTIZE_ARGS)
    "local_percentile": ("default", (("local", True),)),
}
# levers that change the quantize command, not the images: name → extra arguments
QUANTIZE_ARGS: dict[str, list[str]] = {"local_percentile": ["--observer", "percentile"]}
FIELDS = ["model", "lever", "preset", "overrides", "seed", "distill_seconds", "fp32_top1", "int8_top1", "agreement",
          "seconds_total", "command"]


def run_name(model: str, lever: str, seed: int) -> str:
    return f"{model}_{lever}_s{seed}"


def done_runs() -> set[str]:
    if not CSV.exists():
        return set()
    with CSV.open() as f:
        return {run_name(r["model"], r["lever"], int(r["seed"])) for r in csv.DictReader(f)}


def distill_set(model_name: str, weights, lever: str, preset: str, overrides, seed: int, n_images: int,
                path: Path) -> float:
    """Distil `n_images` from the BN-folded weights (one thread) with `preset` plus `overrides`, and save the set as
    `gzsq distill` saves it, for `gzsq quantize --calib-set`. → distillation seconds."""
    import torch

    import gzsq
    from gzsq.config import CalibrationConfig
    from gzsq.models.validate import model_name as name_of
    from gzsq.sources.calibrate import calibrate
    from gzsq.sources.saved import save_calibration

    torch.set_num_threads(1)
    model = gzsq.load_model(model_name, str(weights)) if weights else gzsq.load_model(model_name)
    config = CalibrationConfig(source="gzsq", seed=seed, preset=preset, setting="bn-free", n_images=n_images)
    t = time.perf_counter()
    calib = calibrate(model, config, overrides=overrides)
    seconds = time.perf_counter() - t
    save_calibration(path, calib, {"model": name_of(model), "setting": "bn-free", "preset": preset,
                                   "lever": lever, "overrides": [list(o) for o in overrides]})
    return seconds


def distill(model_name: str, lever: str, seed: int, path: Path) -> float:
    preset, overrides = LEVERS[lever]
    return distill_set(model_name, WEIGHTS.get(model_name), lever, preset, overrides, seed, 64, path)


def run(model: str, lever: str, seed: int) -> dict:
    name = run_name(model, lever, seed)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        calib_set = work / "set.npz"
        distill_seconds = distill(model, lever, seed, calib_set)
        cmd = ["gzsq", "quantize", model, *(["--weights", str(WEIGHTS[model])] if model in WEIGHTS else []),
               "--calib-set", str(calib_set), "--eval-data", str(SAMPLE), "--setting", "bn-free",
               "--threads", "1", "-o", str(work / f"{name}.onnx"), "--json", *QUANTIZE_ARGS.get(lever, [])]
        report, seconds, shown = run_quantize(cmd, name, work, OUT / "reports", (".report.json",))
    e = report["evaluation"]
    preset, overrides = LEVERS[lever]
    return {"model": model, "lever": lever, "preset": preset,
            "overrides": " ".join([f"{k}={v}" for k, v in overrides] + QUANTIZE_ARGS.get(lever, [])) or "-",
            "seed": seed,
            "distill_seconds": round(distill_seconds, 1), "fp32_top1": e["fp32_top1"], "int8_top1": e["int8_top1"],
            "agreement": e["agreement"], "seconds_total": round(seconds + distill_seconds, 1),
            "command": shown.replace(str(calib_set), "SET.npz")}


def write_table() -> None:
    if not CSV.exists():
        return
    groups = grouped_rows(CSV, ("model", "lever"))
    lines = ["| model | lever | preset + overrides | int8 top-1 per seed | agreement per seed | mean agreement | "
             "seeds | distill s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (model, lever), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "default", kv[0][1])):
        mean = sum(float(r["agreement"]) for r in rs) / len(rs)
        dist = sum(float(r["distill_seconds"]) for r in rs) / len(rs)
        lines.append(f"| {model} | {lever} | {rs[0]['preset']} {rs[0]['overrides']} | "
                     f"{' / '.join(r['int8_top1'] for r in rs)} | {' / '.join(r['agreement'] for r in rs)} | "
                     f"{mean:.2f} | {','.join(r['seed'] for r in rs)} | {dist:.1f} |")
    readme = OUT / "README.md"
    begin, end = "<!-- table begin -->", "<!-- table end -->"
    text = readme.read_text() if readme.exists() else (
        "# Distillation levers for the int8 ONNX Runtime model at 224×224\n\n"
        f"Generated by `python experiments/lite_int8_levers.py` (its docstring has the protocol; every command is in "
        f"`runs.csv`). One image is 0.2 pt of agreement.\n\n{begin}\n{end}\n")
    head, rest = text.split(begin, 1)
    readme.write_text(f"{head}{begin}\n" + "\n".join(lines) + f"\n{end}{rest.split(end, 1)[1]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="efficientnet-lite0")
    p.add_argument("--levers", nargs="+", default=["default"], choices=sorted(LEVERS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.table:
        done = done_runs()
        for model in args.models.split(","):
            for lever in args.levers:
                for seed in args.seeds:
                    if run_name(model, lever, seed) in done:
                        continue
                    row = run(model, lever, seed)
                    append_row(CSV, FIELDS, row)
                    print(f"{model} {lever} s{seed}: top-1 {row['int8_top1']} agreement {row['agreement']} "
                          f"({row['seconds_total']} s)", flush=True)
                    write_table()
    write_table()


if __name__ == "__main__":
    main()
