"""Activation equalization: the float network unchanged, the scales where they belong."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gzsq.config import ConfigError, QuantConfig
from gzsq.equalize import MAX_SCALE, equalize, find_pairs, scales_for
from gzsq.fold import fold_bn
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import ReconstructConfig, reconstruct


class _Chain(nn.Module):
    """conv → act → zero pad → depthwise → act → dense 1×1 → pool → linear, channels of uneven width."""

    def __init__(self, act, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.expand, self.pad = nn.Conv2d(3, 8, 1), nn.ZeroPad2d(1)
        self.dw, self.project, self.fc = nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 6, 1), nn.Linear(6, 4)
        self.act = act
        with torch.no_grad():
            for layer in (self.expand, self.dw, self.project, self.fc):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
            self.expand.weight.mul_(torch.logspace(-1.5, 0, 8).view(-1, 1, 1, 1))  # channels 30× apart

    def forward(self, x):
        y = self.act(self.dw(self.pad(self.act(self.expand(x)))))
        return self.fc(F.adaptive_avg_pool2d(self.project(y), 1).flatten(1))


def test_pairs_follow_relu_and_zero_padding_only():
    assert find_pairs(fold_bn(_Chain(nn.ReLU(), 0))) == [("expand", "dw"), ("dw", "project")]  # not across the pool
    assert find_pairs(fold_bn(_Chain(nn.ReLU6(), 0))) == []  # a scaled channel would pass the cap on other images
    assert find_pairs(fold_bn(_Chain(nn.SiLU(), 0))) == []  # a scale does not pass through SiLU


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([(4, 4), (4, 8), (6, 6), (8, 4)]))
def test_float_network_unchanged_under_relu(seed, bits):
    net = _Chain(nn.ReLU(), seed).eval()
    gm = fold_bn(net)
    x = torch.randn(6, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        before = gm(x)
        scales = equalize(gm, x, *bits)
        assert torch.allclose(gm(x), before, rtol=1e-4, atol=1e-5)
        assert torch.allclose(gm(3 * x + 1), fold_bn(net)(3 * x + 1), rtol=1e-4, atol=1e-5)  # any input
    assert all((s >= 1).all() and (s <= MAX_SCALE).all() for s in scales.values())


def test_scales_even_out_channels_within_bounds():
    top = torch.tensor([6.0, 3.0, 0.6, 0.0])
    assert scales_for(top, 1.0).tolist() == pytest.approx([1.0, 2.0, 10.0, 1.0])  # a dead channel keeps 1
    assert scales_for(top, 0.5).tolist() == pytest.approx([1.0, 2 ** 0.5, 10 ** 0.5, 1.0])
    assert scales_for(top, 0.0).tolist() == [1.0] * 4
    assert scales_for(torch.tensor([1.0, 1e-4]), 1.0)[1].item() == MAX_SCALE


def test_at_four_activation_bits_the_narrow_channels_keep_more_levels():
    """Equalizing picks up what one activation grid loses on channels 30× narrower than the widest."""
    torch.manual_seed(0)
    net = _Chain(nn.ReLU(), 3).eval()
    calib = torch.randn(64, 3, 6, 6)
    test = torch.randn(256, 3, 6, 6)
    with torch.no_grad():
        ref = net(test)
        err = {}
        for eq in (False, True):
            sim = quantize(net, calib, QuantConfig(w_bits=8, a_bits=4, observer="mse", equalize=eq))
            err[eq] = (sim(test) - ref).pow(2).mean().item()
    assert err[True] < 0.9 * err[False]


def test_reconstruction_learns_against_the_equalized_float_network():
    net = _Chain(nn.ReLU(), 1).eval()
    calib = torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    sim = quantize(net, calib, QuantConfig(w_bits=4, a_bits=4, observer="mse", weight_clip="mse", equalize=True))
    assert sim.equalization
    out = reconstruct(net, sim, calib, ReconstructConfig(iters=200))
    with torch.no_grad():  # learned against the unequalized weights, the rounding would land far from the float net
        assert (out(calib) - net(calib)).pow(2).mean() < (sim(calib) - net(calib)).pow(2).mean()


def test_config_refuses_a_non_boolean():
    with pytest.raises(ConfigError):
        dataclasses.replace(QuantConfig(), equalize=0.5)
