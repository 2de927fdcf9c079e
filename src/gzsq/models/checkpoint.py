"""Reading weights files safely: one hardened loader for every checkpoint gzsq takes.

`read_checkpoint` loads with `torch.load(..., weights_only=True)` (no pickled code runs) and
turns every way a file can be wrong (missing, not a checkpoint, a pickle that wants code,
a wrapper around the state dict) into one line saying what to do; `load_state` loads a state
dict strictly into a model and names the keys that do not fit.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError


_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
_UNSAFE_OP = re.compile(r"Unsupported operand (\d+)")


def _explain_load_failure(path: Path, exc: Exception) -> str:
    """torch.load's many-paragraph errors → one line a user can act on."""
    text = str(exc)
    unsafe = _UNSAFE_GLOBAL.search(text)
    if unsafe:
        return (f"cannot read checkpoint {path}: it holds pickled code or objects (it would call "
                f"{unsafe.group(1)}); gzsq loads weights only and did not run it: re-save it as a plain "
                "state_dict from a source you trust")
    if "Weights only load failed" in text:
        op = _UNSAFE_OP.search(text)
        detail = f"pickle opcode {op.group(1)}" if op else "not a weights-only pickle"
        return (f"cannot read checkpoint {path}: damaged, or not weights-only ({detail}); gzsq refuses pickles "
                "that may run code: save the weights with torch.save(model.state_dict(), path)")
    first = (text.strip().splitlines() or [type(exc).__name__])[0] or type(exc).__name__
    if len(first) > 160:
        first = first[:157] + "..."
    return f"cannot read checkpoint {path}: {first} (is it a complete file written by torch.save?)"


def _sniff(path: Path, head: bytes) -> str | None:
    """Why `head` cannot start a torch.save file (a zip archive, or a pickle of protocol >= 2), or None."""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":
        return "it looks like an ONNX model, not a PyTorch state_dict"
    return "not a PyTorch checkpoint (torch.save writes a zip archive or a pickle)"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict with weights_only=True (no pickled code runs); strip `module.`.

    Anything but a (possibly {"state_dict": ...}-wrapped) dict of named tensors is
    refused with a one-line ModelLoadError, before any model sees it.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} is not a file")
    try:
        if path.stat().st_size == 0:
            raise ModelLoadError(f"checkpoint {path} is empty (an interrupted download or copy?)")
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc.strerror or type(exc).__name__}") from None
    why = _sniff(path, head)
    if why:
        raise ModelLoadError(f"cannot read checkpoint {path}: {why}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise next to a one-line error
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(_explain_load_failure(path, exc)) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ModelLoadError(f"{path} is not a state dict (a non-empty dict of named tensors), "
                             f"it holds {type(obj).__name__}")
    bad = next(((k, v) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
    if bad is not None:
        raise ModelLoadError(f"{path} is not a state dict of named tensors: entry {str(bad[0])[:40]!r} holds "
                             f"{type(bad[1]).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` into `model` after checking names, shapes and finiteness; one-line ModelLoadError otherwise."""
    own = model.state_dict()
    # Old checkpoints lack BN's num_batches_tracked counter; it carries no weights.
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelLoadError(f"{what}: checkpoint does not match the architecture ({detail}, "
                             f"{len(missing)} missing / {len(unexpected)} unexpected keys)")
    bad = [k for k in state if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ModelLoadError(f"{what}: checkpoint does not match the architecture "
                             f"({k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    kinds = [k for k in state if own[k].is_floating_point() != state[k].is_floating_point() or state[k].is_complex()]
    if kinds:
        k = kinds[0]
        raise ModelLoadError(f"{what}: checkpoint does not match the architecture ({k} holds {state[k].dtype}, "
                             f"the model needs {own[k].dtype})")
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ModelLoadError(f"{what}: weights hold NaN/Inf in {k}")
    try:
        model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError) as exc:  # e.g. complex or sparse tensors where floats belong
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
        raise ModelLoadError(f"{what}: checkpoint tensors do not fit the architecture ({first[:160]})") from None
