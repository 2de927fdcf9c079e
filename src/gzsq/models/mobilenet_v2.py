"""MobileNetV2 (Sandler et al. 2018), written for torchvision's ImageNet checkpoint as it is.

The architecture: a 3×3 stride-2 stem (32 channels), 17 inverted residual blocks, a 1×1 head
to 1280 channels, global average pooling and one linear classifier. An inverted residual block
expands its input with a 1×1 conv (skipped when the expansion t is 1), filters each channel with
a 3×3 depthwise conv, and projects back with a 1×1 conv that has no activation (the "linear
bottleneck"); every other conv is followed by BatchNorm and ReLU6, and a block whose stride is 1
and whose input and output widths match adds its input to its output.

Module names follow torchvision's state-dict layout, so its checkpoint
(`mobilenet_v2-b0353104.pth`, or any copy a user has) loads strictly with no renaming:
`features.0` (stem: conv, bn), `features.N.conv.*` for the blocks (`conv.0`/`conv.1` are
conv-bn-ReLU6 triples, then the projection conv and its BN), `features.18` (head), and
`classifier.1` (the linear layer; `classifier.0` is dropout, inactive in eval mode).
Every BN reads straight from its conv, so graph-based BN folding finds all 52 of them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from .spec import InputSpec

# (expansion t, output channels c, repeats n, first stride s), width multiplier 1.0
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]
STEM, HEAD = 32, 1280
# ImageNet statistics on 0..1 RGB pixels; shorter side resized to 256, centre 224 crop.
SPEC = InputSpec(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_shorter=256,
                 center_crop=224)


def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """conv (no bias, 'same' padding for odd kernels) → BatchNorm → ReLU6, keys `0`, `1`."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=False))


class InvertedResidual(nn.Module):
    """[1×1 expand-bn-ReLU6] → 3×3 depthwise-bn-ReLU6 → 1×1 project → bn, plus the input when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        layers = [conv_bn_relu6(cin, mid, 1)] if expansion != 1 else []
        layers += [conv_bn_relu6(mid, mid, 3, stride, groups=mid),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        features: list[nn.Module] = [conv_bn_relu6(3, STEM, 3, stride=2)]
        cin = STEM
        for t, c, n, s in SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(conv_bn_relu6(cin, HEAD, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(HEAD, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def load_mobilenet_v2(weights: str | Path | None) -> tuple[nn.Module, InputSpec]:
    """Build MobileNetV2 and load torchvision's checkpoint (strict: every key, every shape), eval mode."""
    if weights is None:
        raise ModelLoadError("mobilenet-v2 needs --weights: torchvision's ImageNet checkpoint "
                             "(mobilenet_v2-b0353104.pth, a plain state dict)")
    from .checkpoint import load_state, read_checkpoint  # one hardened loader for every checkpoint

    model = MobileNetV2()
    load_state(model, read_checkpoint(weights), f"mobilenet-v2 from {weights}")
    return model.eval(), SPEC
