"""Why the simulator's export stores int32 biases: ONNX Runtime rounds float conv biases itself.

    python experiments/ort_bias_rounding.py > results/ort_bias_rounding.txt

ResNet-20, W4A4 simulator (MSE starting ranges) calibrated on 64 Gaussian-noise images (seed 0), exported
twice: with the float biases the simulator computes with, and with biases first rounded to int32 at
input scale x weight scale (`with_integer_biases`, what `gzsq quantize` exports). Each file runs in ONNX
Runtime with its default optimizations, and with its WeightBiasQuantization transformer disabled; the
table gives the share of 1000 CIFAR-10 test images (every 10th) on which ONNX Runtime's prediction
equals the simulator's, torch and ONNX Runtime on one thread.
"""

import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from gzsq.config import QuantConfig
from gzsq.data import load_eval_set
from gzsq.export.onnx_sim import export_sim_onnx
from gzsq.models import load_model
from gzsq.quantization.sim import quantize, with_integer_biases

SHARED = Path(__file__).resolve().parents[2] / "shared"

torch.set_num_threads(1)
model = load_model("cifar10-resnet20", weights=SHARED / "models/cifar10/resnet20.th")
images = load_eval_set(model, SHARED / "data/cifar10/test.npz").images[::10]
calib = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
sim_float = quantize(model, calib, QuantConfig.starting_point(4, 4))
print(__doc__.splitlines()[0])
print("| simulator biases | ORT default optimizations | ORT without WeightBiasQuantization |")
print("| --- | --- | --- |")
with tempfile.TemporaryDirectory() as work:
    for label, sim in (("float", sim_float), ("int32 (exported as such)", with_integer_biases(sim_float))):
        path = Path(work) / "m.onnx"
        path.unlink(missing_ok=True)
        Path(str(path.with_suffix("")) + ".encodings.json").unlink(missing_ok=True)
        export_sim_onnx(sim, path)
        with torch.no_grad():
            reference = sim(images).argmax(1).numpy()
        cells = []
        for disabled in ([], ["WeightBiasQuantization"]):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=disabled)
            pred = session.run(None, {"input": images.numpy()})[0].argmax(1)
            cells.append(f"{(pred == reference).mean() * 100:.1f} %")
        print(f"| {label} | {cells[0]} | {cells[1]} |")
