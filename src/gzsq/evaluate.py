"""Accuracy and agreement of FP32 vs quantized models on real labelled data (SPEC §6).

`evaluate_quantization` is the whole protocol for one configuration: FP32
top-1, calibration from a named source, simulated quantization, quantized top-1
and agreement (the share of images whose quantized top-1 equals the FP32 top-1),
with seconds per stage. When `real` calibration would draw from the evaluation
set itself, it runs two folds (even/odd rows): calibrate on one, evaluate the
other, and combine — never calibrating on an evaluated image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import interrupt
from .config import QuantConfig
from .data import load_dataset
from .errors import DataError
from .fold import fold_bn, has_batchnorm
from .models.validate import check_input
from .quantize.sim import quantize
from .sources import SourceOptions, make_calibration


@dataclass
class EvalSet:
    path: str
    images: torch.Tensor  # N×C×H×W, normalized for the model
    labels: np.ndarray
    preprocessing: str = ""  # what was done to the images, for reports (InputSpec.describe)


def load_eval_set(model: nn.Module, path: str | Path, *, progress: bool = False,
                  labels_must_fit: bool = True) -> EvalSet:
    """`labels_must_fit=False` admits labels beyond the model's classes (FP32-vs-int8 agreement still means
    something there, e.g. a 2-class ONNX model run on ImageNet images)."""
    data = load_dataset(path)
    num_classes = check_input(model)
    if labels_must_fit:
        check_labels(data.labels, num_classes, str(path))
    elif len(data.labels) == 0:
        raise DataError(f"{path} holds no images")
    spec = model.input_spec
    chunks, as_is = [], 0
    for start in tqdm(range(0, len(data), 250), desc="load data", disable=not progress, leave=False):
        interrupt.check("load-data")
        images = data.images(range(start, min(start + 250, len(data))))
        as_is += sum(spec.has_input_size(im) for im in images)
        chunks.append(spec.to_tensor(images))
    return EvalSet(str(path), torch.cat(chunks), data.labels, spec.describe(as_is, len(data)))


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Every label must name one of the model's classes; a CIFAR set on an ImageNet model is not an accuracy."""
    if len(labels) == 0:
        raise DataError(f"{where} holds no images")
    top = int(labels.max())
    if top >= num_classes:
        raise DataError(f"{where}: label {top} is out of range for a model with {num_classes} classes "
                        f"(labels must be 0..{num_classes - 1}); is this the model's dataset?")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int | None = None, progress: bool = False,
            desc: str = "evaluate") -> np.ndarray:
    """Top-1 class per image. channels_last: ~1.5× faster convolutions on CPU (the model is converted
    for the call and given back in the default layout). The default batch holds about 256 CIFAR
    images' worth of pixels (8 at 224×224), so a Ctrl-C between batches is acted on quickly."""
    model.eval()  # (PT2E programs patch eval() and return None, so it is not chained)
    model.to(memory_format=torch.channels_last)
    batch_size = batch_size or max(8, 256 * 32 * 32 // max(1, images[0].numel() // 3))
    out = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
            interrupt.check("evaluate")
            batch = images[start:start + batch_size].contiguous(memory_format=torch.channels_last)
            out.append(model(batch).argmax(1))
    finally:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(out).numpy()


def top1(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean() * 100)


def default_setting(model: nn.Module) -> str:
    return "bn" if has_batchnorm(model) else "bn-free"


def _same_file(a: str | None, b: str) -> bool:
    return a is not None and Path(a).resolve() == Path(b).resolve()


@dataclass
class CalibrationFold:
    """Calibration images and the evaluation rows they may be used on."""

    images: torch.Tensor
    eval_rows: np.ndarray
    seconds: float
    log: dict


def calibration_folds(model: nn.Module, eval_set: EvalSet, *, calib: str, n_calib: int, seed: int, setting: str,
                      calib_data: str | None = None, preset: str = "default", overrides=(),
                      progress: bool = False) -> list[CalibrationFold]:
    """Make the calibration set(s) for one run; two folds when `real` would draw from the evaluation set."""
    seen = model if setting == "bn" else fold_bn(model)  # what the setting lets the source read
    n = len(eval_set.labels)
    if calib == "real" and (calib_data is None or _same_file(calib_data, eval_set.path)):
        rows = np.arange(n)
        plan = [(rows[0::2], rows[1::2]), (rows[1::2], rows[0::2])]  # (calibrate on, evaluate on)
        calib_data = eval_set.path
    else:
        plan = [(None, np.arange(n))]
    folds = []
    for calib_rows, eval_rows in plan:
        options = SourceOptions(setting=setting, calib_data=calib_data, preset=preset, progress=progress,
                                calib_indices=None if calib_rows is None else tuple(calib_rows.tolist()),
                                overrides=tuple(overrides))
        c = make_calibration(calib, seen, n_calib, seed=seed, options=options)
        folds.append(CalibrationFold(c.images, eval_rows, c.seconds, c.log))
    return folds


def evaluate_folds(model: nn.Module, eval_set: EvalSet, folds: list[CalibrationFold], config: QuantConfig,
                   fp32_pred: np.ndarray, *, progress: bool = False) -> tuple[dict, dict]:
    """Quantize once per fold, predict that fold's rows; → (metrics, seconds)."""
    quant_pred = np.empty(len(eval_set.labels), dtype=np.int64)
    seconds = {"quantize": 0.0, "quant_eval": 0.0}
    for fold in folds:
        t = time.perf_counter()
        sim = quantize(model, fold.images, config, progress=progress)
        seconds["quantize"] += time.perf_counter() - t
        t = time.perf_counter()
        quant_pred[fold.eval_rows] = predict(sim, eval_set.images[fold.eval_rows], progress=progress,
                                             desc="quantized")
        seconds["quant_eval"] += time.perf_counter() - t
    metrics = {"fp32_top1": round(top1(fp32_pred, eval_set.labels), 2),
               "top1": round(top1(quant_pred, eval_set.labels), 2),
               "agreement": round(float((quant_pred == fp32_pred).mean() * 100), 2)}
    return metrics, seconds


def evaluate_quantization(model: nn.Module, eval_set: EvalSet, *, calib: str = "real", n_calib: int = 256,
                          seed: int = 0, setting: str | None = None, config: QuantConfig | None = None,
                          calib_data: str | None = None, preset: str = "default", overrides=(),
                          progress: bool = False) -> dict:
    """One row of the results table; see the module docstring."""
    config = config or QuantConfig()
    setting = setting or default_setting(model)
    t = time.perf_counter()
    fp32_pred = predict(model, eval_set.images, progress=progress, desc="fp32")
    seconds = {"fp32_eval": time.perf_counter() - t}
    folds = calibration_folds(model, eval_set, calib=calib, n_calib=n_calib, seed=seed, setting=setting,
                              calib_data=calib_data, preset=preset, overrides=overrides, progress=progress)
    seconds["calibration_data"] = sum(f.seconds for f in folds)
    metrics, more = evaluate_folds(model, eval_set, folds, config, fp32_pred, progress=progress)
    seconds.update(more)
    log = folds[0].log
    return {
        "model": getattr(model, "gzsq_name", type(model).__name__),
        "setting": setting,
        "calib": calib_label(calib, preset),
        "w_bits": config.w_bits,
        "a_bits": config.a_bits,
        "observer": config.observer,
        "n_calib": n_calib,
        "seed": seed,
        "folds": len(folds),
        "preprocessing": eval_set.preprocessing,
        **metrics,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "distill": {k: log[k] for k in ("iterations", "final_loss", "stopped_early") if k in log},
    }


def calib_label(calib: str, preset: str) -> str:
    return f"gzsq-{preset}" if calib == "gzsq" and preset else calib
