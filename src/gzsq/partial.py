"""OUT.partial for `gzsq quantize`: an interrupted reconstruction, resumable where it stopped.

Reconstruction is the long stage of a low-bit job (minutes to tens of minutes), so its progress is
kept: once the calibration images exist, and again after every learned unit, the file holds the
images (so a resumed run does not distill again) and `reconstruct`'s progress (hard roundings and
step sizes of the units done, the RNG state). It is keyed by the model's weights and every setting
of the job, so it never continues a different run. torch.save of tensors and plain values, read
back weights-only, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write_bytes
from .config import QuantizeJob
from .errors import ConfigError
from .models.validate import model_name
from .sources import Calibration

_FORMAT = "gzsq-quantize-partial/1"


def partial_path(out: str | Path) -> Path:
    """Where an interrupted job keeps its resumable state: OUT.partial."""
    return Path(f"{out}.partial")


def job_key(model: nn.Module, job: QuantizeJob, calibration_config) -> str:
    """A hash of the weights and of every setting that shapes the reconstruction's result."""
    h = hashlib.sha256()
    settings = {"model": model_name(model), "calibration": asdict(calibration_config),
                "quant": job.simulated_scheme.to_dict(),
                "reconstruction": job.reconstruction.to_dict() if job.reconstruction else None}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Saved:
    """What an OUT.partial holds: the calibration images and the reconstruction's progress (None: no
    unit finished yet)."""

    calibration: Calibration
    progress: dict | None

    @property
    def units_done(self) -> int:
        return len(self.progress["units"]) if self.progress else 0


class Partial:
    """The OUT.partial of one job: `load` what an earlier run left, `save` as this one goes."""

    def __init__(self, out: str | Path, key: str):
        self.path, self.key = partial_path(out), key
        self.units_done = 0
        self.total_units: int | None = None

    def load(self) -> Saved | None:
        """The saved state, None when there is no file; a one-line error when it is another run's or damaged."""
        if not self.path.exists():
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(self.path, map_location="cpu", weights_only=True)
            ok = isinstance(state, dict) and state.get("format") == _FORMAT
        except Exception:
            ok = False
        if not ok:
            raise ConfigError(f"cannot resume from {self.path}: it is damaged or not a gzsq quantize checkpoint; "
                              "delete it, or pass --force to start over")
        if state.get("key") != self.key:
            raise ConfigError(f"{self.path} is the progress of a different run (model, weights or settings differ); "
                              "resume with the same command, or pass --force to start over")
        try:
            images = state["images"]
            if not (isinstance(images, torch.Tensor) and images.dim() == 4 and images.dtype == torch.float32):
                raise TypeError
            calibration = Calibration(images, str(state["source"]), int(state["seed"]), float(state["seconds"]),
                                      json.loads(state["log"]))
            progress = state["progress"]
            if progress is not None and not isinstance(progress, dict):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"cannot resume from {self.path}: it is damaged; delete it, or pass --force to start "
                              "over") from None
        saved = Saved(calibration, progress)
        self.units_done = saved.units_done
        self.total_units = progress.get("total_units") if progress else None
        return saved

    def save(self, calibration: Calibration, progress: dict | None) -> None:
        state = {"format": _FORMAT, "key": self.key, "images": calibration.images.detach().float().cpu(),
                 "source": calibration.source, "seed": int(calibration.seed), "seconds": float(calibration.seconds),
                 "log": json.dumps(calibration.log, default=str), "progress": progress}
        # Not interruptible: the state being saved when a signal arrives is the one --resume needs.
        atomic_write_bytes(self.path, lambda f: torch.save(state, f), interruptible=False)
        self.units_done = len(progress["units"]) if progress else 0
        if progress:
            self.total_units = progress["total_units"]
