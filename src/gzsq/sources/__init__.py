"""Calibration-data sources (docs/how-it-works.md §2): one registry, one signature.

A source is a function `fn(model, n, *, seed, options) -> Calibration` registered
by name. `model` is what the setting lets the source see: the network with its
BatchNorm layers in the `bn` setting, the BN-folded network in `bn-free`.
"""

from .registry import (Calibration, SourceOptions, available_sources, check_source, get_source, make_calibration,
                       register_source)
from .calibrate import calibrate, check_calibration
from . import gzsq, noise, real, zeroq  # noqa: F401  (registration side effects)

__all__ = ["Calibration", "SourceOptions", "available_sources", "calibrate", "check_calibration", "check_source",
           "get_source", "make_calibration", "register_source"]
