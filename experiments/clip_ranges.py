"""Bounded activations' ranges from the architecture: ReLU6 outputs quantized over [0, 6] whatever the images.

The int8 main job on the 224×224 models (`gzsq.quantize`: ONNX Runtime int8, 64 images from the default preset,
setting bn-free, one thread, all 500 sample images), with `Int8ExportConfig(clip_ranges=True)`: every Clip with
constant bounds (ReLU6) gets its bounds as its range instead of the min/max its calibration images reach. Compare
with results/imagenet_int8/ (the same runs with calibrated ranges; `--control` reruns those here too).

    python experiments/clip_ranges.py --models efficientnet-lite2 --seeds 0 1 2 [--sources gzsq,gaussian] [--control]

One JSON line per run on stdout.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import gzsq
from gzsq.config import CalibrationConfig, Int8ExportConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lowbit_imagenet import DATA as SAMPLE, WEIGHTS  # noqa: E402  (the sample and MobileNetV2's checkpoint)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="efficientnet-lite0,efficientnet-lite1,efficientnet-lite2,mobilenet-v2")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sources", default="gzsq")
    p.add_argument("--control", action="store_true", help="also run with calibrated ranges (clip_ranges=False)")
    args = p.parse_args()
    for name in args.models.split(","):
        model = gzsq.load_model(name, WEIGHTS.get(name))
        for source in args.sources.split(","):
            for seed in args.seeds:
                for clip in ((False, True) if args.control else (True,)):
                    with tempfile.TemporaryDirectory() as work:
                        t = time.perf_counter()
                        report = gzsq.quantize(model, Path(work) / "m.onnx", threads=1, eval_data=SAMPLE,
                                               calibration=CalibrationConfig(source=source, seed=seed, setting="bn-free"),
                                               export=Int8ExportConfig(clip_ranges=clip))
                    e = report["evaluation"]
                    print(json.dumps({"model": name, "calib": report["calib"], "seed": seed, "clip_ranges": clip,
                                      "fp32_top1": e["fp32_top1"], "int8_top1": e["int8_top1"],
                                      "agreement": e["agreement"], "seconds": round(time.perf_counter() - t, 1)}),
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
