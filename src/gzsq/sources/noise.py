"""The naive zero-shot baselines: Gaussian and uniform noise ."""

from __future__ import annotations

import torch

from .registry import Calibration, SourceOptions, input_shape, register_source


@register_source("gaussian")
def gaussian(model, n: int, *, seed: int, options: SourceOptions) -> Calibration:
    """x ~ N(0, 1) in the normalized input space: what a normalized image looks like on average."""
    g = torch.Generator().manual_seed(seed)
    return Calibration(torch.randn((n,) + input_shape(model), generator=g), "gaussian", seed, 0.0)


@register_source("uniform")
def uniform(model, n: int, *, seed: int, options: SourceOptions) -> Calibration:
    """Pixels uniform on [0, 1], then the model's normalization: noise that stays a valid image."""
    g = torch.Generator().manual_seed(seed)
    low, high = model.input_spec.pixel_bounds()
    u = torch.rand((n,) + input_shape(model), generator=g)
    return Calibration(low + u * (high - low), "uniform", seed, 0.0)
