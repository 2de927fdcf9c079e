"""CIFAR-10 ResNet of depth 6n+2 with the parameter-free "option A" shortcut.

He et al. 2016, §4.2; checkpoint layout of akamaster/pytorch_resnet_cifar10
(see ../shared/models/cifar10/README.md). `norm=False` builds the same graph
with biased convs and no BatchNorm: the shape of a BN-folded ResNet, and of the
normalizer-free net trained by experiments/train_bnfree_resnet.py.

Written without data-dependent Python so that torch.fx can trace it: folding
and quantization work on the traced graph, never on module names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int, norm: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not norm)


class ShortcutA(nn.Module):
    """Identity, or (stride 2 + width doubling) subsample and zero-pad channels."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = (cout - cin) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: bool = True):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, norm)
        self.bn1 = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.conv2 = _conv3x3(cout, cout, 1, norm)
        self.bn2 = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.shortcut = ShortcutA(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, norm: bool = True):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = _conv3x3(3, 16, 1, norm)
        self.bn1 = nn.BatchNorm2d(16) if norm else nn.Identity()
        layers, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(cin, width, stride, norm))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
