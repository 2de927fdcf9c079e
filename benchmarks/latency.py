"""ONNX Runtime latency, FP32 vs int8 (QDQ), for ResNet-20 and EfficientNet-Lite0 at batch 1 and 32.

    python benchmarks/latency.py [--repeats 30] [--threads 0] > benchmarks/results/latency.txt

Both models of a pair are timed in the same run, interleaved (fp32, int8, fp32, int8, ...), so
machine noise hits both alike; the table reports medians and the int8/fp32 speed ratio. Latency does
not depend on where calibration ranges came from, so the int8 models here are calibrated on 32
Gaussian-noise images to keep the benchmark quick; accuracy is measured elsewhere
(results/quantize/runs.txt). `gzsq bench MODEL` measures the same for any one model, calibrated
the real way.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch


from gzsq.bench import time_pair
from gzsq.export import OnnxClassifier, export_fp32_onnx, export_onnx_int8
from gzsq.models import load_model
from gzsq.sources import SourceOptions, make_calibration

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    args = parser.parse_args()
    models = [("cifar10-resnet20", SHARED / "models/cifar10/resnet20.th"), ("efficientnet-lite0", None)]
    print(f"# ONNX Runtime {ort.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, threads={args.threads or 'default'}, repeats={args.repeats} (median)")
    print(f"# command: python benchmarks/latency.py --repeats {args.repeats} --threads {args.threads}")
    print("| model | batch | FP32 ms | int8 ms | int8 speed-up (FP32 ms / int8 ms) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        for name, weights in models:
            model = load_model(name, weights)
            fp32_path = export_fp32_onnx(model, Path(work) / f"{name}.onnx")
            calib = make_calibration("gaussian", model, 32, seed=0, options=SourceOptions()).images
            int8_path = export_onnx_int8(fp32_path, Path(work) / f"{name}-int8.onnx", calib.numpy())
            fp32 = OnnxClassifier(fp32_path, threads=args.threads)
            int8 = OnnxClassifier(int8_path, threads=args.threads)
            for batch_size in (1, 32):
                batch = torch.randn(batch_size, *model.input_spec.shape).numpy()
                f, q = time_pair(fp32, int8, batch, args.repeats if batch_size == 1 else max(5, args.repeats // 3))
                print(f"| {name} | {batch_size} | {f:.2f} | {q:.2f} | {f / q:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
