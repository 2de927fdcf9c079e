"""Accuracy and agreement of FP32 vs quantized models on real labelled data (docs/how-it-works.md §5).

`evaluate_quantization` is the whole protocol for one configuration: FP32
top-1, calibration (a `CalibrationConfig`), simulated quantization (a
`QuantConfig`), quantized top-1
and agreement (the share of images whose quantized top-1 equals the FP32 top-1),
with seconds per stage. When `real` calibration would draw from the evaluation
set itself, it runs two folds (even/odd rows): calibrate on one, evaluate the
other, and combine — never calibrating on an evaluated image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import CalibrationConfig, ImagesFor, QuantConfig
from .data import EvalSet, load_eval_set  # noqa: F401  (the evaluation set, part of this stage's API)
from .metrics import agreement, predict, top1
from .models.validate import model_name
from .quantization.sim import quantize
from .sources import calibrate, check_calibration


def _same_file(a: str | None, b: str) -> bool:
    return a is not None and Path(a).resolve() == Path(b).resolve()


@dataclass
class CalibrationFold:
    """Calibration images and the evaluation rows they may be used on."""

    images: torch.Tensor
    eval_rows: np.ndarray
    seconds: float
    log: dict


def calibration_folds(model: nn.Module, eval_set: EvalSet, calibration: CalibrationConfig, *, overrides=(),
                      progress: bool = False) -> list[CalibrationFold]:
    """Make the calibration set(s) for one run; two folds when `real` would draw from the evaluation set."""
    calibration = calibration.resolved(model)
    n = len(eval_set.labels)
    if calibration.source == "real" and (calibration.data is None or _same_file(calibration.data, eval_set.path)):
        rows = np.arange(n)
        plan = [(rows[0::2], rows[1::2]), (rows[1::2], rows[0::2])]  # (calibrate on, evaluate on)
        calibration = replace(calibration, data=eval_set.path)
    else:
        plan = [(None, np.arange(n))]
    folds = []
    for calib_rows, eval_rows in plan:
        c = calibrate(model, calibration, progress=progress, overrides=overrides,
                      calib_indices=None if calib_rows is None else tuple(calib_rows.tolist()))
        folds.append(CalibrationFold(c.images, eval_rows, c.seconds, c.log))
    return folds


def evaluate_folds(model: nn.Module, eval_set: EvalSet, folds: list[CalibrationFold], config: QuantConfig,
                   fp32_pred: np.ndarray, *, reconstruction=None, seed: int = 0,
                   progress: bool = False) -> tuple[dict, dict]:
    """Quantize once per fold (then reconstruct, with a `ReconstructConfig`), predict that fold's rows;
    → (metrics, seconds)."""
    quant_pred = np.empty(len(eval_set.labels), dtype=np.int64)
    seconds = {"quantize": 0.0, "quant_eval": 0.0}
    for fold in folds:
        t = time.perf_counter()
        sim = quantize(model, fold.images, config, progress=progress)
        seconds["quantize"] += time.perf_counter() - t
        if reconstruction is not None:
            from .reconstruct import reconstruct

            t = time.perf_counter()
            sim = reconstruct(model, sim, fold.images, reconstruction, seed=seed, progress=progress)
            seconds["reconstruct"] = seconds.get("reconstruct", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        quant_pred[fold.eval_rows] = predict(sim, eval_set.images[fold.eval_rows], progress=progress,
                                             desc="quantized")
        seconds["quant_eval"] += time.perf_counter() - t
    metrics = {"fp32_top1": round(top1(fp32_pred, eval_set.labels), 2),
               "top1": round(top1(quant_pred, eval_set.labels), 2),
               "agreement": round(agreement(quant_pred, fp32_pred), 2)}
    return metrics, seconds


def evaluate_quantization(model: nn.Module, eval_set: EvalSet, calibration: CalibrationConfig = CalibrationConfig(),
                          quant: QuantConfig = QuantConfig(), *, reconstruction=None, overrides=(),
                          progress: bool = False) -> dict:
    """One row of the results table: FP32 top-1, calibration, simulated quantization (with learned rounding
    and step sizes when `reconstruction` is a `ReconstructConfig`), quantized top-1 and agreement, seconds
    per stage (see the module docstring)."""
    calibration = check_calibration(model, calibration, ImagesFor.job(quant, reconstruction))
    t = time.perf_counter()
    fp32_pred = predict(model, eval_set.images, progress=progress, desc="fp32")
    seconds = {"fp32_eval": time.perf_counter() - t}
    folds = calibration_folds(model, eval_set, calibration, overrides=overrides, progress=progress)
    seconds["calibration_data"] = sum(f.seconds for f in folds)
    metrics, more = evaluate_folds(model, eval_set, folds, quant, fp32_pred, reconstruction=reconstruction,
                                   seed=calibration.seed, progress=progress)
    seconds.update(more)
    log = folds[0].log
    return {
        "model": model_name(model),
        "setting": calibration.setting,
        "calib": calibration.label,
        "w_bits": quant.w_bits,
        "a_bits": quant.a_bits,
        "observer": quant.observer,
        "weight_clip": quant.weight_clip,
        "reconstruct": reconstruction.method if reconstruction is not None else "none",
        "reconstruction": reconstruction.to_dict() if reconstruction is not None else None,
        "n_calib": calibration.n_images,
        "seed": calibration.seed,
        "folds": len(folds),
        "preprocessing": eval_set.preprocessing,
        **metrics,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "distill": {k: log[k] for k in ("iterations", "final_loss", "stopped_early") if k in log},
    }

