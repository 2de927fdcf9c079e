"""Where EfficientNet-Lite0's ONNX Runtime int8 accuracy goes, and what closes the gap.

    python experiments/lite0_int8_gap.py > results/lite0_int8_gap.txt
    python experiments/lite0_int8_gap.py --model mobilenet-v2 --preset auto --variants 2,3,8 > results/mobilenet_v2_int8_gap.txt

`--model` runs the same comparison on another 224×224 model of the zoo (MobileNetV2 with torchvision's
checkpoint from ../shared); `--preset auto` calibrates with the images the main job makes (local targets at
int8); `--variants` picks rows of the table by their 1-based position below.

One gzsq calibration set (default preset, 64 images, seed 0; distilled once and cached under
--work), one FP32 export, then ONNX Runtime int8 exports that differ in one choice each: the weight
grid (ORT's reduce_range [-64, 64] everywhere, the full int8 grid everywhere, or full only on the
depthwise convolutions, whose kernel accumulates in 32 bits; the "pair-safe" per-channel grid,
the finest on which no two neighbouring weights can overflow the u8×s8 kernels' 16-bit sums
(gzsq.export.onnx_int8.pair_safe_weight_ranges); uint8 weights, whose u8×u8 kernels cannot saturate), bias correction (gzsq.export.bias_correction) and the range observer (min/max,
ORT's histogram percentile). "fused s": seconds for the 500 images in the fused int8 kernels (batch 64,
other jobs may share the cores: compare within one run). Each is run on the 500 ImageNet sample images twice: with the fused int8
kernels (what a deployment runs) and with ONNX Runtime's QDQ reference (graph optimizations off, Q/DQ as
float ops). Fused ≠ reference means the kernels saturate on this CPU. Gaussian-noise calibration is
the reference row for the calibration data.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from gzsq.sources.saved import load_calibration, save_calibration
from gzsq.evaluation import load_eval_set
from gzsq.export import OnnxClassifier, export_fp32_onnx
from gzsq.export.onnx_int8 import Int8ExportConfig, depthwise_weights, export_onnx_int8
from gzsq.models import load_model
from gzsq.config import CalibrationConfig, ImagesFor
from gzsq.sources import SourceOptions, make_calibration
from gzsq.sources.calibrate import calibrate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assets import WEIGHTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"
# name → the export's settings
VARIANTS = {
    "reduce_range everywhere":
        Int8ExportConfig(depthwise_full_range=False, bias_correction=False, pair_safe=False),
    "full grid everywhere": Int8ExportConfig(reduce_range=False, bias_correction=False),
    "full grid, uint8 weights (u8×u8 kernels)":
        Int8ExportConfig(reduce_range=False, weights="uint8", bias_correction=False),
    "reduce_range, full grid on depthwise": Int8ExportConfig(bias_correction=False, pair_safe=False),
    "reduce_range everywhere + bias correction": Int8ExportConfig(depthwise_full_range=False, pair_safe=False),
    "reduce_range, full grid on depthwise + bias correction": Int8ExportConfig(pair_safe=False),
    "pair-safe grid, full grid on depthwise": Int8ExportConfig(bias_correction=False),
    "pair-safe grid, full grid on depthwise + bias correction (gzsq default)": Int8ExportConfig(),
    "… the same with percentile ranges": Int8ExportConfig(calibration="percentile"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/gzsq-lite0-gap", help="cache for the calibration sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibs", default="gzsq,gaussian")
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--preset", default="default", help="gzsq's preset (default: `default`, as the committed Lite0 "
                                                        "table; `auto`: what the main job uses)")
    p.add_argument("--variants", default=None, help="comma-separated 1-based rows of the table (default: all)")
    args = p.parse_args(argv)
    rows = list(VARIANTS.items())
    if args.variants:
        rows = [rows[int(i) - 1] for i in args.variants.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# python experiments/lite0_int8_gap.py {cmd}  (ONNX Runtime {ort.__version__}, {platform.machine()})")
    model = load_model(args.model, str(WEIGHTS[args.model]) if args.model in WEIGHTS else None)
    ev = load_eval_set(model, SHARED / "data/imagenet-sample")
    images, labels = ev.images.numpy(), ev.labels
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_fp32_onnx(model, Path(tmp) / "fp32.onnx")
        t = time.perf_counter()
        fp32 = OnnxClassifier(fp32_path).predict(images)
        print(f"FP32 (ONNX Runtime): top-1 {(fp32 == labels).mean() * 100:.1f} % on {len(labels)} images, "
              f"{time.perf_counter() - t:.1f} s")
        import onnx
        print(f"depthwise convolutions (full-grid candidates): {len(depthwise_weights(onnx.load(str(fp32_path))))}")
        for calib in args.calibs.split(","):
            stem = "lite0" if args.model == "efficientnet-lite0" else args.model
            suffix = "" if args.preset == "default" or calib != "gzsq" else f"-{args.preset}"
            cache = work / f"{stem}-{calib}{suffix}-seed{args.seed}.npz"
            if cache.exists():
                calibration = load_calibration(cache)
            elif args.preset == "default":
                t = time.perf_counter()
                calibration = make_calibration(calib, model, 64, seed=args.seed, options=SourceOptions())
                print(f"[{calib}] calibration set made in {time.perf_counter() - t:.0f} s "
                      f"({calibration.log.get('recipe', {}).get('distill', '')})")
                save_calibration(cache, calibration, {"preset": "default"})
            else:  # the main job's images: CalibrationConfig resolved for an int8 job, setting bn-free
                t = time.perf_counter()
                config = CalibrationConfig(source=calib, seed=args.seed, setting="bn-free", n_images=64,
                                           preset=args.preset).resolved(model, ImagesFor())
                calibration = calibrate(model, config)
                print(f"[{calib}] calibration set ({config.preset}) made in {time.perf_counter() - t:.0f} s")
                save_calibration(cache, calibration, {"preset": config.preset})
            calib_np = calibration.images.numpy()
            print(f"\n## calibration: {calib}, {len(calib_np)} images, seed {args.seed}")
            print("| export | fused top-1 | QDQ reference top-1 | fused = reference | agreement with FP32 | fused s |")
            print("| --- | --- | --- | --- | --- | --- |")
            for name, settings in rows:
                out = Path(tmp) / "int8.onnx"
                export_onnx_int8(fp32_path, out, calib_np, settings, input_range=model.input_spec.input_range())
                session = OnnxClassifier(out)
                t = time.perf_counter()
                fused = session.predict(images)
                seconds = time.perf_counter() - t
                ref = OnnxClassifier(out, reference=True).predict(images, batch_size=50)
                print(f"| {name} | {(fused == labels).mean() * 100:.1f} | {(ref == labels).mean() * 100:.1f} | "
                      f"{(fused == ref).mean() * 100:.1f} % | {(fused == fp32).mean() * 100:.1f} % | {seconds:.1f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
