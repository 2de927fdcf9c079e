"""Observers: how an activation's range is chosen from calibration data (docs/how-it-works.md §3).

Collecting statistics and turning them into a range are kept apart: one
`RangeCollector` per quantized tensor keeps the exact min/max and a bounded random
sample of values; an observer is a function (collector, bits) → (lo, hi), looked
up by name. A new rule is a new function, not a new quantizer.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError
from .primitives import act_qparams, fake_quant_act

SAMPLE_CAP = 1 << 20  # values kept per tensor: plenty for a 99.99th percentile


class RangeCollector:
    def __init__(self, seed: int = 0):
        self.lo = float("inf")
        self.hi = float("-inf")
        self.samples: list[torch.Tensor] = []
        self.kept = 0
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1).float()
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        room = SAMPLE_CAP - self.kept
        if room <= 0:
            return
        if x.numel() > room:
            x = x[torch.randint(x.numel(), (room,), generator=self._gen)]
        self.samples.append(x.clone())
        self.kept += x.numel()

    def values(self) -> torch.Tensor:
        return torch.cat(self.samples) if self.samples else torch.zeros(1)


def minmax(c: RangeCollector, bits: int) -> tuple[float, float]:
    return c.lo, c.hi


def percentile(c: RangeCollector, bits: int, q: float = 99.99) -> tuple[float, float]:
    v = c.values()
    lo = torch.quantile(v, (100 - q) / 100).item()
    hi = torch.quantile(v, q / 100).item()
    return max(lo, c.lo), min(hi, c.hi)


def mse(c: RangeCollector, bits: int, grid: int = 64) -> tuple[float, float]:
    """Shrink [lo, hi] towards 0 by the factor that minimizes fake-quant squared error."""
    v = c.values()
    best, best_err = (c.lo, c.hi), float("inf")
    for frac in torch.linspace(0.2, 1.0, grid).tolist():
        lo, hi = c.lo * frac, c.hi * frac
        scale, zp = act_qparams(lo, hi, bits)
        err = float(((fake_quant_act(v, scale, zp, bits) - v) ** 2).mean())
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


OBSERVERS: dict[str, Callable[[RangeCollector, int], tuple[float, float]]] = {
    "minmax": minmax,
    "percentile": percentile,
    "mse": mse,
}


def get_observer(name: str):
    if name not in OBSERVERS:
        raise ConfigError(f"unknown observer {name!r}; choose one of {', '.join(OBSERVERS)}")
    return OBSERVERS[name]
