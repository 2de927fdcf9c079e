"""A plain VGG-style CIFAR-10 CNN: 3×3 convs, ReLU, 2×2 max-pool, global average pool, one linear layer.

`CifarVGG(widths=((32, 32), (64, 64), (128, 128)), norm=False)` is the net that ships as
`cifar10-vgg7-nf` (6 convs + 1 linear = 7 weight layers), trained from scratch without any
normalization layer by experiments/train_bnfree_vgg.py. Each stage is its convs (stride 1,
padding 1) followed by a 2×2 max-pool; after the last stage the feature map is averaged
over space and fed to `linear`. `norm=True` builds the same graph with a BatchNorm after each
(then bias-free) conv: the twin the training script can train for comparison.

No residual connections and no data-dependent Python: torch.fx traces it, and its state_dict
(`features.<i>.weight/bias`, `linear.weight/bias`) is the checkpoint format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VGG7_WIDTHS: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64), (128, 128))


class CifarVGG(nn.Module):
    def __init__(self, widths: tuple[tuple[int, ...], ...] = VGG7_WIDTHS, num_classes: int = 10,
                 norm: bool = False):
        super().__init__()
        if not widths or any(not stage for stage in widths):
            raise ValueError("CifarVGG needs at least one stage of at least one conv")
        layers: list[nn.Module] = []
        cin = 3
        for stage in widths:
            for width in stage:
                layers.append(nn.Conv2d(cin, width, 3, padding=1, bias=not norm))
                if norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
