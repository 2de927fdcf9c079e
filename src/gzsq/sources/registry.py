"""The registry of calibration sources and the objects they exchange."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..config import SourceOptions, check_n_calib, check_seed
from ..errors import ConfigError
from ..models.validate import validate_model


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


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ConfigError("the model carries no input_spec; load it with gzsq.models.load_model")
    return spec.shape
