"""Where the heavy tensor work runs (`--device`): distillation, reconstruction and evaluation.

Like torch's thread count, the device belongs to the run, not to one stage: the CLI and the API
choose it once (`use`), and the three loops that do the heavy work move a copy of their model and
their tensors there and hand results back on the CPU. Everything else (targets from the weights,
range calibration, export, ONNX Runtime) stays on the CPU, so outputs differ between devices only
by float rounding. Random numbers are drawn on the CPU, so a seed gives the same start anywhere;
only reconstruction's QDrop masks, too large to copy every step, are drawn on the device from
seeds the CPU draws (the seed fixes them; they are not the CPU's draws).
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch
from torch import nn

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
_current = torch.device("cpu")


def resolve(name: str) -> torch.device:
    """auto: a CUDA GPU when there is one, else the CPU; cuda without a GPU is a one-line error."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: PyTorch sees no CUDA GPU here (a CPU-only build, or no driver); "
                          "use --device cpu or auto")
    if "LOCAL_RANK" in os.environ:  # under torchrun: one GPU per process on a machine
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())  # an index: set_device refuses a bare "cuda"


def current() -> torch.device:
    return _current


@contextlib.contextmanager
def use(name: str | torch.device):
    """Run the block with the heavy work on `name` ("auto", "cpu", "cuda" or a torch.device)."""
    global _current
    before = _current
    _current = name if isinstance(name, torch.device) else resolve(name)
    if _current.type == "cuda":
        torch.cuda.set_device(_current)
    try:
        yield _current
    finally:
        _current = before


def on_device(model: nn.Module) -> nn.Module:
    """The model itself on the CPU, a copy of it elsewhere (the caller's model is never moved)."""
    return model if _current.type == "cpu" else copy.deepcopy(model).to(_current)
