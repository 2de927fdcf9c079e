"""Simulated W8A8 vs the ONNX Runtime int8 model, on each of the 10 disjoint 1000-image CIFAR-10 subsets.

    python experiments/sim_vs_runtime.py > results/sim_vs_runtime.txt

Same calibration set for both (256 real training images, seed 0), ONNX export with s8 activations and
full-range weights (what the agreement test uses). The test in tests/test_export.py checks one subset
(every 10th image from 0); this prints all ten, for both simulator placements.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gzsq.config import QuantConfig
from gzsq.evaluation import load_eval_set, predict
from gzsq.export import Int8ExportConfig, OnnxClassifier, export_fp32_onnx, export_onnx_int8
from gzsq.models import load_model
from gzsq.quantization.sim import quantize
from gzsq.sources import SourceOptions, make_calibration

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"


def main() -> None:
    model = load_model("cifar10-resnet20", SHARED / "models/cifar10/resnet20.th")
    calib = make_calibration("real", model, 256, seed=0, options=SourceOptions(
        setting="bn", calib_data=str(SHARED / "data/cifar10/train-jpeg.tar"))).images
    data = load_eval_set(model, SHARED / "data/cifar10/test.npz")
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_fp32_onnx(model, Path(work) / "r20.onnx")
        int8 = export_onnx_int8(fp32, Path(work) / "r20-int8.onnx", calib.numpy(),
                                Int8ExportConfig(reduce_range=False, activations="int8", bias_correction=False),
                                input_range=model.input_spec.input_range())
        runtime = OnnxClassifier(int8).predict(data.images.numpy(), batch_size=500)
    labels = data.labels
    print("# python experiments/sim_vs_runtime.py  (ResNet-20, real calibration 256 images, seed 0)")
    print("| placement | top-1 sim (10 000) | top-1 ORT (10 000) | agreement | ORT − sim per 1000-image subset "
          "(rows k::10, k = 0..9) | subsets within 0.3 pt |")
    print("| --- | --- | --- | --- | --- | --- |")
    for placement in ("spec", "runtime"):
        sim = predict(quantize(model, calib, QuantConfig(placement=placement)), data.images)
        diffs = [((runtime[k::10] == labels[k::10]).mean() - (sim[k::10] == labels[k::10]).mean()) * 100
                 for k in range(10)]
        print(f"| {placement} | {(sim == labels).mean() * 100:.2f} | {(runtime == labels).mean() * 100:.2f} | "
              f"{(sim == runtime).mean() * 100:.2f} % | {', '.join(f'{d:+.1f}' for d in diffs)} | "
              f"{sum(abs(d) <= 0.3 + 1e-9 for d in diffs)}/10 |", flush=True)


if __name__ == "__main__":
    main()
