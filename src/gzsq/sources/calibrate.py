"""The calibration stage: a `CalibrationConfig` in, calibration images out.

Resolves the model's defaults, refuses a source that cannot run before any long work,
shows the source what the setting allows (the folded network in `bn-free`), or loads
a set saved by `gzsq distill` instead.
"""

from __future__ import annotations

from torch import nn

from ..config import INT8_JOB, CalibrationConfig, ImagesFor, SourceOptions
from ..fold import fold_bn
from .registry import Calibration, check_source, make_calibration
from .saved import load_calibration_for


def check_calibration(model: nn.Module, config: CalibrationConfig,
                      images_for: ImagesFor = INT8_JOB) -> CalibrationConfig:
    """Resolve the model's defaults into `config` (for images put to this use) and refuse (one line) a source
    that cannot run on it, before any long work. → the resolved config."""
    config = config.resolved(model, images_for)
    if config.saved_set is None:
        check_source(config.source, model, config.setting)
    return config


def calibrate(model: nn.Module, config: CalibrationConfig, *, progress: bool = False, checkpoint=None,
              calib_indices: tuple[int, ...] | None = None, overrides: tuple = ()) -> Calibration:
    """The calibration stage: images for `model` as `config` says.

    The source sees what the setting allows: the network with its BatchNorm layers (`bn`), or the
    BN-folded network (`bn-free`, as in a deployment export). A `saved_set` is loaded and checked
    against the model instead. `checkpoint` (a distill `Checkpoint`) lets distilling sources resume;
    `calib_indices` restricts `real` to some rows; `overrides` replace preset settings (ablations).
    """
    config = check_calibration(model, config)
    if config.saved_set is not None:
        return load_calibration_for(model, config.saved_set)
    seen = model if config.setting == "bn" else fold_bn(model)
    options = SourceOptions(setting=config.setting, calib_data=config.data, calib_indices=calib_indices,
                            preset=config.preset, overrides=tuple(overrides), progress=progress,
                            checkpoint=checkpoint)
    return make_calibration(config.source, seen, config.n_images, seed=config.seed, options=options)
