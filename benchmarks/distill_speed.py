"""Distillation speed: gzsq's default recipe vs `thorough` and the 500-iteration ZeroQ-style recipe, in one run.

The recipe timed as the default is what the command line uses, preset `auto`: for an int8 job `local` (the
same budget, targets taken from the images' current input statistics) on both models.

    python benchmarks/distill_speed.py                 # ResNet-20 (256 images) and EfficientNet-Lite0 (64)
    python benchmarks/distill_speed.py --full          # run the 500-iteration recipe to the end too

The default recipe is timed --repeats times (the median is reported and every
run listed: on a 2-core CPU one run was 20 % slower than the next). All three
recipes use the same targets and loss. `default` optimizes a subset
(256 CIFAR images' worth of pixels: all 256 at 32×32, 16 at 224×224) for 20 Adam
steps and makes the rest by flips/shifts; `thorough` optimizes every image for
30 steps; the 500-step recipe optimizes every image for 500 steps (ZeroQ's
budget). Without --full the thorough and 500-step times are the measured time of
--probe-steps steps on all images scaled to 30 and 500 steps (each step costs
the same: one forward and backward on the same batch), and are labelled so. Machines here are noisy: read
the ratios, which are measured in the same run. The goals on a 2-core CPU:
ResNet-20, 256 images in <= 15 s; Lite0, 64 images in <= 60 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from gzsq.bench import peak_memory_mib
from gzsq.fold import fold_bn
from gzsq.models import load_model
from gzsq.sources import SourceOptions, make_calibration
from gzsq.sources.gzsq import PRESETS, resolve_preset

ROOT = Path(__file__).resolve().parents[1]
CIFAR_RESNET20 = ROOT.parent / "shared" / "models/cifar10/resnet20.th"  # the checkpoint the zoo does not ship


def timed(model, n, preset, overrides, seed=0) -> tuple[float, int]:
    start = time.perf_counter()
    calib = make_calibration("gzsq", model, n, seed=seed,
                             options=SourceOptions(preset=preset, overrides=tuple(overrides)))
    return time.perf_counter() - start, sum(calib.log["iterations"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="run the 500-step recipe to the end")
    p.add_argument("--probe-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="time the default recipe this many times; report the median")
    p.add_argument("--models", default="cifar10-resnet20,efficientnet-lite0")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    default = PRESETS["default"].distill
    print(f"default recipe: {default.iterations} steps, lr {default.lr}, loss {default.loss}, "
          f"{default.distill_pixels} pixels optimized (at least 16 images), the rest flips/shifts")
    goals = {"cifar10-resnet20": 15.0, "efficientnet-lite0": 60.0}
    for name in args.models.split(","):
        weights = CIFAR_RESNET20 if name == "cifar10-resnet20" else None
        model = fold_bn(load_model(name, weights))
        n = 64 if model.input_spec.size >= 128 else 256
        chosen = resolve_preset("auto", model)  # the command's default
        timed(model, min(n, 8), chosen, [("iterations", 1)])  # warm-up: allocator, kernels
        runs = [timed(model, n, chosen, []) for _ in range(args.repeats)]
        t_default, steps = statistics.median(t for t, _ in runs), runs[0][1]
        spread = f"median of {len(runs)} runs: " + ", ".join(f"{t:.1f}" for t, _ in runs) + " s"
        peak_mb = peak_memory_mib()  # the process so far
        optimized = default.images_to_optimize(n, model.input_spec.shape)
        thorough = PRESETS["thorough"].distill.iterations
        if args.full:
            t_thorough, _ = timed(model, n, "thorough", [])
            t_long, _ = timed(model, n, "thorough", [("iterations", 500), ("early_stop_patience", 0)])
            how = "measured"
        else:  # thorough and the 500-step recipe differ only in their number of equal-cost steps
            t_probe, probe_steps = timed(model, n, "thorough", [("iterations", args.probe_steps),
                                                                ("early_stop_patience", 0)])
            t_thorough, t_long = t_probe * thorough / probe_steps, t_probe * 500 / probe_steps
            how = f"extrapolated from {probe_steps} measured steps on all {n} images ({t_probe:.1f} s)"
        goal = goals.get(name)
        verdict = "" if goal is None else f" | goal <= {goal:.0f} s: {'met' if t_default <= goal else 'NOT met'}"
        print(f"{name}: {n} images | default (auto: {chosen}) {t_default:.1f} s ({spread}; {n / t_default:.1f} images/s; "
              f"{optimized} optimized x {steps} steps; peak RSS so far {peak_mb:.0f} MiB){verdict}"
              f" | thorough {t_thorough:.1f} s ({n} x {thorough} steps; {t_thorough / t_default:.1f}x the default)"
              f" | 500-step recipe {t_long:.1f} s ({t_long / t_default:.1f}x the default) | {how}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
