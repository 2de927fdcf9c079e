"""The simulation model: where quantizers sit, what they hold, and that W8A8 is near-lossless."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from gzsq.config import QuantConfig
from gzsq.data import load_dataset
from gzsq.errors import ConfigError
from gzsq.evaluation import predict
from gzsq.models import load_model
from gzsq.quantization.sim import quantize

from .conftest import CIFAR_TEST, CIFAR_TRAIN, RESNET20, needs


def test_quantizer_placement_on_tiny(tiny):
    sim = quantize(tiny, torch.randn(16, 3, 8, 8), QuantConfig(w_bits=4, a_bits=4))
    roles = sorted(q.role for q in sim.act_quantizers().values())
    # input (8 bit), conv2's input (the ReLU output, shared with the skip), the fused add+ReLU, fc's input
    assert roles == ["input", "layer-input", "layer-input", "residual-add"]
    bits = {q.role: q.bits for q in sim.act_quantizers().values()}
    assert bits["input"] == 8 and bits["residual-add"] == 4
    enc = sim.encodings()
    assert set(enc["weights"]) == {"conv1", "conv2", "fc"}
    assert len(enc["weights"]["conv1"]["scale"]) == 8  # one scale per output channel
    assert "act_quant_0" in repr(sim) and "scale=" in repr(sim)


def test_weights_on_grid_after_quantize(tiny):
    sim = quantize(tiny, torch.randn(8, 3, 8, 8), QuantConfig(w_bits=3, a_bits=8))
    for name, (bits, scale) in sim.weight_scales.items():
        w = sim.net.get_submodule(name).weight
        q = w / scale.view((-1,) + (1,) * (w.dim() - 1))
        assert torch.allclose(q, q.round(), atol=1e-4) and q.abs().max() <= 3


def test_first_last_8bit(tiny):
    sim = quantize(tiny, torch.randn(8, 3, 8, 8), QuantConfig(w_bits=4, a_bits=4, first_last_8bit=True))
    assert sim.weight_scales["conv1"][0] == 8 and sim.weight_scales["fc"][0] == 8
    assert sim.weight_scales["conv2"][0] == 4


def test_pair_safe_8bit_grids_spare_depthwise_convs_and_leave_lower_bits_alone():
    """Pair-safe grids reach the 8-bit convs and linear layers whose neighbouring products a GEMM adds in 16 bits,
    not depthwise convs (ONNX Runtime's depthwise kernel widens to 32 bits) and not narrower grids."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with torch.no_grad():
        for layer in (net[0], net[2], net[6]):
            layer.weight.abs_()  # every pair of one sign: the pair rule binds on every layer
    calib = torch.randn(8, 3, 8, 8)
    full = quantize(net, calib, QuantConfig()).weight_scales
    safe = quantize(net, calib, QuantConfig(pair_safe_8bit=True)).weight_scales
    for name in ("0", "6"):  # the first conv and the classifier: coarser, and no pair past 128
        assert torch.all(safe[name][1] >= full[name][1]) and torch.any(safe[name][1] > full[name][1] * 1.01), name
    assert torch.equal(safe["2"][1], full["2"][1])  # the depthwise conv keeps the full grid
    low = QuantConfig(w_bits=6, a_bits=8)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(quantize(net, calib, low).weight_scales.values(),
                                                       quantize(net, calib, replace(low, pair_safe_8bit=True))
                                                       .weight_scales.values()))


def test_bad_config_refused():
    with pytest.raises(ConfigError):
        QuantConfig(w_bits=9)
    with pytest.raises(ConfigError):
        QuantConfig(observer="median")


def test_observers_give_nested_ranges(tiny):
    calib = torch.randn(32, 3, 8, 8)
    ranges = {}
    for obs in ("minmax", "percentile", "mse"):
        sim = quantize(tiny, calib, QuantConfig(a_bits=4, observer=obs))
        # effective ranges: the grid always includes 0
        ranges[obs] = [(min(q.lo, 0.0), max(q.hi, 0.0)) for q in sim.act_quantizers().values()]
    for (lo_m, hi_m), (lo_p, hi_p), (lo_e, hi_e) in zip(ranges["minmax"], ranges["percentile"], ranges["mse"]):
        assert lo_m <= lo_p <= hi_p <= hi_m
        assert lo_m <= lo_e <= hi_e <= hi_m
    assert ranges["minmax"] != ranges["percentile"]


def test_resnet20_w8a8_real_calibration_close_to_fp32():
    model = load_model("cifar10-resnet20", needs(RESNET20))
    test = load_dataset(needs(CIFAR_TEST))
    train = load_dataset(needs(CIFAR_TRAIN))
    rows = np.arange(0, 10000, 20)  # 500 images across all classes
    x = model.input_spec.to_tensor(test.images(rows))
    calib = model.input_spec.to_tensor(train.images(np.random.default_rng(0).choice(len(train), 128, replace=False)))
    sim = quantize(model, calib, QuantConfig())
    fp32, quant = predict(model, x), predict(sim, x)
    assert (fp32 == quant).mean() > 0.97
