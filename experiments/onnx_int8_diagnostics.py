"""Why gzsq's ONNX export looks the way it does: ONNX Runtime int8 variants measured side by side.

    python experiments/onnx_int8_diagnostics.py > results/onnx_int8_diagnostics.txt

For ResNet-20 (1000 CIFAR-10 test images, every 10th) and EfficientNet-Lite0 (the 500 ImageNet sample
images), each calibrated on 32 Gaussian-noise images (seed 0; the variants differ in the export, not
in the data): activation type (u8 / s8), weight grid (full / reduce_range), logits int8 or float.
Columns: top-1 of the fused int8 kernels, top-1 of ONNX Runtime's own QDQ reference (graph
optimizations off: Q/DQ run as float ops), their agreement, agreement with FP32, and seconds for the
fused run. Fused ≠ reference means the int8 kernels saturate on this CPU.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from gzsq.evaluation import load_eval_set
from gzsq.export import OnnxClassifier, export_fp32_onnx
from gzsq.export.onnx_int8 import ImageReader
from gzsq.models import load_model
from gzsq.sources import SourceOptions, make_calibration

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"
VARIANTS = [  # name, activations, reduce_range, float logits
    ("u8 act, full weights, int8 logits", QuantType.QUInt8, False, False),
    ("s8 act, full weights, int8 logits", QuantType.QInt8, False, False),
    ("s8 act, full weights, float logits", QuantType.QInt8, False, True),
    ("u8 act, full weights, float logits", QuantType.QUInt8, False, True),
    ("s8 act, reduce_range, float logits", QuantType.QInt8, True, True),
    ("u8 act, reduce_range, float logits", QuantType.QUInt8, True, True),  # gzsq exports the pair-safe grid instead
]


def main() -> None:
    print(f"# python experiments/onnx_int8_diagnostics.py   (ONNX Runtime {ort.__version__})")
    cases = [("cifar10-resnet20", SHARED / "models/cifar10/resnet20.th", SHARED / "data/cifar10/test.npz", 10),
             ("efficientnet-lite0", None, SHARED / "data/imagenet-sample", 1)]
    with tempfile.TemporaryDirectory() as work:
        for name, weights, data, stride in cases:
            model = load_model(name, weights)
            ev = load_eval_set(model, data)
            images, labels = ev.images[::stride].numpy(), ev.labels[::stride]
            calib = make_calibration("gaussian", model, 32, seed=0, options=SourceOptions()).images.numpy()
            fp32_path = export_fp32_onnx(model, Path(work) / f"{name}.onnx")
            fp32 = OnnxClassifier(fp32_path).predict(images)
            low, high = model.input_spec.pixel_bounds()
            print(f"\n## {name}: {len(images)} images, FP32 top-1 {(fp32 == labels).mean() * 100:.1f}")
            print("| variant | fused top-1 | QDQ reference top-1 | fused = reference | agreement with FP32 | fused s |")
            print("| --- | --- | --- | --- | --- | --- |")
            for variant, act, reduce, float_logits in VARIANTS:
                extra = {"ActivationSymmetric": False, "WeightSymmetric": True,
                         "TensorQuantOverrides": {"input": [{"rmin": np.float32(low.min()),
                                                             "rmax": np.float32(high.max())}]}}
                if float_logits:
                    extra["OpTypesToExcludeOutputQuantization"] = ["Gemm", "MatMul"]
                path = Path(work) / f"{name}-q.onnx"
                quantize_static(str(fp32_path), str(path), ImageReader(calib, "input", 32, "nchw"),
                                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce,
                                activation_type=act, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
                t = time.perf_counter()
                fused = OnnxClassifier(path).predict(images)
                seconds = time.perf_counter() - t
                ref = OnnxClassifier(path, reference=True).predict(images, batch_size=50)
                print(f"| {variant} | {(fused == labels).mean() * 100:.1f} | {(ref == labels).mean() * 100:.1f} | "
                      f"{(fused == ref).mean() * 100:.1f} % | {(fused == fp32).mean() * 100:.1f} % | {seconds:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
