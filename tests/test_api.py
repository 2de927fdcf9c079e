"""The public face: `import gzsq` gives load_model, quantize, distill, evaluate and the configs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import gzsq

from .conftest import CIFAR_TEST, RESNET20, needs


def test_import_is_light_and_the_public_names_are_there():
    """`import gzsq` loads no torch (the CLI validates a command line before the heavy imports)."""
    code = "import sys, gzsq; print('torch' in sys.modules, sorted(gzsq.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False")
    for name in ("load_model", "quantize", "distill", "evaluate", "CalibrationConfig", "QuantConfig"):
        assert name in out


def test_the_public_calls_survive_importing_the_internal_modules():
    """Submodules are named apart from the calls (evaluation, distillation, quantization), so importing one
    never replaces `gzsq.evaluate` and friends with a module."""
    import gzsq.distillation  # noqa: F401
    import gzsq.evaluation  # noqa: F401
    import gzsq.quantization.sim  # noqa: F401

    assert callable(gzsq.quantize) and callable(gzsq.distill) and callable(gzsq.evaluate)


def test_quantize_distill_evaluate_end_to_end(tmp_path):
    model = gzsq.load_model("cifar10-resnet20", needs(RESNET20))
    noise = gzsq.CalibrationConfig(source="gaussian", n_images=16)
    report = gzsq.quantize(model, tmp_path / "r20.onnx", calibration=noise)
    assert (tmp_path / "r20.onnx").exists() and report["calib"] == "gaussian" and report["n_calib"] == 16

    saved = tmp_path / "set.npz"
    calibration = gzsq.distill(model, 16, output=saved)
    again = gzsq.distill(model, 16)
    assert np.array_equal(calibration.images.numpy(), again.images.numpy())  # same seed, same images
    report = gzsq.quantize(model, tmp_path / "r20b.onnx", calibration=gzsq.CalibrationConfig(saved_set=str(saved)))
    assert report["calib"] == "gzsq-local" and report["calib_set"] == str(saved)

    rows = np.arange(0, 10000, 50)
    data = np.load(needs(CIFAR_TEST))
    small = tmp_path / "small.npz"
    np.savez(small, images=data["images"][rows], labels=data["labels"][rows])
    row = gzsq.evaluate(model, small, calibration=noise, quant=gzsq.QuantConfig(w_bits=8, a_bits=8))
    assert row["w_bits"] == 8 and row["n_calib"] == 16 and row["agreement"] > 90
