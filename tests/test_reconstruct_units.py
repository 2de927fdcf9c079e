"""gzsq.reconstruct's block units: a skip-less inverted-residual block is one unit per conv by default and one
unit (expand, depthwise, project) with `merge_chains`, cropped on its whole stride; ResNet and VGG units are
the same either way."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.fx as fx
from torch import nn

from gzsq import reconstruct as R
from gzsq.config import QuantConfig
from gzsq.models import load_model
from gzsq.models.spec import InputSpec
from gzsq.quantization.sim import WEIGHT_LAYERS, quantize
from gzsq.reconstruct import ReconstructConfig, reconstruct

from .conftest import RESNET20, needs


def _conv_bn(cin, cout, k=1, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand, stride):
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn(cin, hidden) if expand != 1 else nn.Identity()
        self.dw = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, act=False)  # the linear bottleneck
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.skip else y


class _Toy(nn.Module):
    """MobileNetV2 in small: stem, a t=1 block and a stride-2 block without skips, a residual block, head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = _conv_bn(3, 8, 3, stride=2)
        self.a = _InvertedResidual(8, 4, 1, 1)  # width changes: no skip
        self.b = _InvertedResidual(4, 8, 3, 2)  # stride 2: no skip
        self.c = _InvertedResidual(8, 8, 3, 1)  # a residual add
        self.head = _conv_bn(8, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.head(self.c(self.b(self.a(self.stem(x)))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def _toy():
    net = _Toy().eval()
    net.input_spec = InputSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    net.gzsq_name = "toy"
    return net


def _units(sim, merge_chains=False):
    modules = dict(sim.net.named_modules())
    is_weight = lambda n: n.op == "call_module" and isinstance(modules.get(n.target), WEIGHT_LAYERS)  # noqa: E731
    units = R._block_units(sim.net.graph, is_weight, modules, merge_chains=merge_chains)
    return [[str(n.target) for n in u.nodes if is_weight(n)] for u in units], units, modules


def test_skip_less_inverted_residual_blocks_one_unit_per_conv_by_default():
    model = _toy()
    calib = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig.starting_point(4, 8))
    every_conv = [["stem.0"], ["a.dw.0"], ["a.project.0"], ["b.expand.0"], ["b.dw.0"], ["b.project.0"],
                  ["c.expand.0", "c.dw.0", "c.project.0"], ["head.0"], ["fc"]]
    assert _units(sim)[0] == every_conv
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=2, batch_size=4, crop=16))
    assert [u["layers"] for u in out.reconstruction["units"]] == every_conv


def test_merged_chains_make_skip_less_inverted_residual_blocks_one_unit(monkeypatch):
    model = _toy()
    calib = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig.starting_point(4, 8))
    layers, units, modules = _units(sim, merge_chains=True)
    # the stem joins the t=1 block it feeds (ReLU6 output, then depthwise and linear projection); the
    # residual block was already one unit; the head conv holds the global pool; the classifier alone
    assert layers == [["stem.0", "a.dw.0", "a.project.0"], ["b.expand.0", "b.dw.0", "b.project.0"],
                      ["c.expand.0", "c.dw.0", "c.project.0"], ["head.0"], ["fc"]]
    # the crop grid of a merged unit is its whole stride: stem (2) and block b's depthwise (2)
    assert [R._unit_stride(u, modules) for u in units] == [(2, 2), (2, 2), (1, 1), None, None]
    monkeypatch.setattr(R, "_block_units", functools.partial(R._block_units, merge_chains=True))
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=3, batch_size=4, crop=16))
    log = out.reconstruction["units"]
    assert [u["layers"] for u in log] == layers
    # 64- and 32-wide inputs learn on 16×16 windows; block c's 16-wide input and the global ops on full maps
    assert [u["crop"] for u in log] == [16, 16, None, None, None]


def test_chains_merge_at_most_three_layers_and_only_into_a_linear_end():
    torch.manual_seed(0)
    convs = [nn.Conv2d(4, 4, 3, padding=1) for _ in range(5)]
    chain = nn.Sequential(*[m for c in convs[:4] for m in (c, nn.ReLU())], convs[4])  # last conv: no activation
    plain = nn.Sequential(*[m for c in convs[:3] for m in (c, nn.ReLU())], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    found = []
    for net in (chain, plain):
        gm = fx.symbolic_trace(net)
        modules = dict(gm.named_modules())
        is_weight = lambda n: n.op == "call_module" and isinstance(modules[n.target], WEIGHT_LAYERS)  # noqa: E731
        units = R._block_units(gm.graph, is_weight, modules, merge_chains=True)
        found.append([[n.target for n in u.nodes if is_weight(n)] for u in units])
    # conv-ReLU ×4 then a linear conv: the last three layers are one unit, the first stays alone
    assert found[0] == [["0"], ["2"], ["4", "6", "8"]]
    # a stack of conv-ReLUs that ends in a global pool is not fused; the pool stays with its conv
    assert found[1] == [["0"], ["2"], ["4"], ["8"]]


@pytest.mark.parametrize("name, weights, expected", [
    ("cifar10-resnet20", RESNET20,
     [["conv1"]] + [[f"layer{s}.{b}.conv1", f"layer{s}.{b}.conv2"] for s in (1, 2, 3) for b in range(3)]
     + [["linear"]]),
    ("cifar10-resnet20-nf", None,
     [["conv1"]] + [[f"layer{s}.{b}.conv1", f"layer{s}.{b}.conv2"] for s in (1, 2, 3) for b in range(3)]
     + [["linear"]]),
    ("cifar10-vgg7-nf", None, [[f"features.{i}"] for i in (0, 2, 5, 7, 10, 12)] + [["linear"]]),
])
def test_cifar_resnets_and_vgg_keep_their_units(name, weights, expected):
    """ResNet blocks already have skips: one unit per residual block, the stem and the classifier alone,
    with or without merged chains; a VGG stack (activations, then a global pool) stays one unit per conv."""
    model = load_model(name, weights=needs(weights) if weights else None).eval()
    calib = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig.starting_point(4, 8))
    assert _units(sim)[0] == expected
    assert _units(sim, merge_chains=True)[0] == expected
