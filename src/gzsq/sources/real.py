"""Real images from a dataset the user names: the upper bound.

Never the evaluation split: the CLI passes the training set, or for a single
small set the *other* fold (docs/how-it-works.md §5) through `options.calib_indices`.
"""

from __future__ import annotations

import numpy as np

from ..data import load_dataset
from ..errors import ConfigError
from .registry import Calibration, SourceOptions, register_source


@register_source("real")
def real(model, n: int, *, seed: int, options: SourceOptions) -> Calibration:
    if not options.calib_data:
        raise ConfigError("calibration source 'real' needs a dataset (--calib-data PATH), never the evaluation split")
    data = load_dataset(options.calib_data)
    pool = np.arange(len(data)) if options.calib_indices is None else np.asarray(options.calib_indices)
    if n > len(pool):
        raise ConfigError(f"asked for {n} real calibration images but {options.calib_data} offers {len(pool)}")
    chosen = np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))
    images = model.input_spec.to_tensor(data.images(chosen))
    return Calibration(images, "real", seed, 0.0, {"indices": chosen.tolist(), "dataset": options.calib_data})
