"""The registry of calibration sources and the objects they exchange."""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..models.validate import validate_model

SETTINGS = ("bn", "bn-free")
# More calibration images than this is a typo, not a plan: ranges settle after a few hundred, and
# 100 000 ImageNet-size images would need ~60 GB of memory.
MAX_CALIBRATION_IMAGES = 100_000
MAX_SEED = 2**32 - 1  # what every RNG gzsq seeds (torch, numpy) accepts


@dataclass(frozen=True)
class SourceOptions:
    """Everything a source may need besides the model, n and the seed."""

    setting: str = "bn-free"  # what the source may read: "bn" (BN statistics) or "bn-free"
    calib_data: str | None = None  # dataset path, for `real`
    calib_indices: tuple[int, ...] | None = None  # restrict `real` to these rows (2-fold protocol)
    preset: str = "default"  # for distilling sources (gzsq)
    overrides: tuple[tuple[str, object], ...] = ()  # distillation settings that replace the preset's
    progress: bool = False
    checkpoint: object | None = None  # a distill.loop.Checkpoint: where distilling sources save/resume state

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")


@dataclass(frozen=True)
class Calibration:
    """N×C×H×W images in the model's normalized input space, plus how they were made."""

    images: torch.Tensor
    source: str
    seed: int
    seconds: float
    log: dict = field(default_factory=dict)  # e.g. loss curve, iterations, settings


SourceFn = Callable[..., Calibration]
_SOURCES: dict[str, SourceFn] = {}
_CHECKS: dict[str, Callable[[nn.Module, str], None]] = {}


def register_source(name: str, check: Callable[[nn.Module, str], None] | None = None):
    """Register a source; `check(model, setting)` raises SourceNotApplicableError before any work."""
    def wrap(fn: SourceFn) -> SourceFn:
        _SOURCES[name] = fn
        if check is not None:
            _CHECKS[name] = check
        return fn

    return wrap


def check_source(name: str, model: nn.Module, setting: str) -> None:
    """Refuse early (one line) when source `name` cannot run on this model in this setting."""
    get_source(name)
    if name in _CHECKS:
        _CHECKS[name](model, setting)


def available_sources() -> list[str]:
    return sorted(_SOURCES)


def get_source(name: str) -> SourceFn:
    if name not in _SOURCES:
        raise ConfigError(f"unknown calibration source {name!r}; choose one of {', '.join(available_sources())}")
    return _SOURCES[name]


def make_calibration(name: str, model: nn.Module, n: int, *, seed: int = 0,
                     options: SourceOptions | None = None) -> Calibration:
    """Run source `name`; checks n, times the call and validates what comes back."""
    fn = get_source(name)
    n, seed = check_n_calib(n), check_seed(seed)
    validate_model(model)
    start = time.perf_counter()
    calib = fn(model, n, seed=seed, options=options or SourceOptions())
    seconds = time.perf_counter() - start
    spec = getattr(model, "input_spec", None)
    if spec is not None and tuple(calib.images.shape[1:]) != spec.shape:
        raise RuntimeError(f"source {name} returned images of shape {tuple(calib.images.shape)}")
    if not torch.isfinite(calib.images).all():
        raise RuntimeError(f"source {name} returned non-finite images")
    return Calibration(calib.images.detach().float().contiguous(), name, seed, seconds, calib.log)


def check_n_calib(n) -> int:
    """The number of calibration images: an integer from 1 to MAX_CALIBRATION_IMAGES."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"number of calibration images must be a positive integer, got {n!r}")
    if n > MAX_CALIBRATION_IMAGES:
        raise ConfigError(f"{n} calibration images is too many (at most {MAX_CALIBRATION_IMAGES:,}; "
                          "256 is the usual choice)")
    return int(n)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ConfigError("the model carries no input_spec; load it with gzsq.models.load_model")
    return spec.shape
