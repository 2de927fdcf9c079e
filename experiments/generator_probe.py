"""Does a conv-decoder parametrization of the distilled images (DistillConfig.generator) optimize the `local-long`
objective as well as the pixels do?

EfficientNet-Lite0, seed 0, 8 images at 224×224, `local-long`'s settings with 30 steps and no copies, on one
thread. Prints, for each variant, the seconds, the loss every 5 steps and the images' pixel std.

    python experiments/generator_probe.py > results/lowbit/generator_probe.txt
    python experiments/generator_probe.py 5 6 7     # only those variants (indices into VARIANTS)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gzsq  # noqa: E402
from gzsq.config import CalibrationConfig  # noqa: E402
from gzsq.sources.calibrate import calibrate  # noqa: E402
from recon_images import _LOCAL_LONG  # noqa: E402

VARIANTS = ((("grad_spectrum", 1.0),),
            (("generator", True), ("generator_lr", 0.002)),
            (("generator", True), ("generator_lr", 0.005)),
            (("generator", True), ("generator_lr", 0.01)),
            (("generator", True), ("generator_lr", 0.05)),
            (("generator", True), ("generator_lr", 0.0), ("generator_latent_lr", 0.05)),
            (("generator", True), ("generator_lr", 0.0), ("generator_latent_lr", 0.2)),
            (("generator", True), ("generator_lr", 0.0001), ("generator_latent_lr", 0.05)))


def main() -> None:
    torch.set_num_threads(1)
    model = gzsq.load_model("efficientnet-lite0")
    print(f"# python experiments/generator_probe.py {' '.join(sys.argv[1:])}  (EfficientNet-Lite0, seed 0, 8 images, local-long with 30 steps, "
          "1 thread)")
    chosen = [VARIANTS[int(i)] for i in sys.argv[1:]] or VARIANTS
    for extra in chosen:
        overrides = _LOCAL_LONG + (("iterations", 30), ("expand_crop_scale", 1.0)) + extra
        config = CalibrationConfig(source="gzsq", seed=0, preset="default", setting="bn-free", n_images=8)
        start = time.perf_counter()
        try:
            calib = calibrate(model, config, overrides=overrides)
        except Exception as e:  # a diverged run is a result too
            print(f"{dict(extra)}: {type(e).__name__}: {e}", flush=True)
            continue
        curve = calib.log["loss_curve"]
        print(f"{dict(extra)}: {time.perf_counter() - start:.1f} s; loss every 5 steps "
              f"{' '.join(f'{v:.1f}' for v in curve[::5])}, last {curve[-1]:.1f}; pixel std {float(calib.images.std()):.3g}",
              flush=True)


if __name__ == "__main__":
    main()
