"""gzsq.reconstruct on spatial crops: a local unit learns on windows aligned to its stride, a unit with a
global op keeps the full map, and maps no wider than the crop are trained exactly as before."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from gzsq import reconstruct as R
from gzsq.config import QuantConfig
from gzsq.errors import ConfigError
from gzsq.fold import fold_bn
from gzsq.models.spec import InputSpec
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import ReconstructConfig, reconstruct

from .conftest import make_tiny


class _Strided(nn.Module):
    """A 40×40 network: conv-ReLU, TF-style stride-2 conv (asymmetric zero pad), a residual block, pool, head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2)
        self.conv3 = nn.Conv2d(12, 12, 3, padding=1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu6(self.conv2(self.pad(x)))
        x = F.relu(self.conv3(x) + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _strided():
    net = _Strided().eval()
    net.input_spec = InputSpec(size=40, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    net.gzsq_name = "strided"
    return net


def _whole(gm: fx.GraphModule) -> R._Unit:
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    return R._Unit("all", next(n for n in gm.graph.nodes if n.op == "placeholder"), nodes)


def test_config_crop_checked():
    assert ReconstructConfig(crop=0).crop == 0
    for bad in (-1, True, 2.5, "16"):
        with pytest.raises(ConfigError, match="crop"):
            ReconstructConfig(crop=bad)


def test_window_on_the_stride_grid_reproduces_the_full_map_inside():
    """The float unit on an aligned window equals the full map's output away from the window's borders;
    a window off the stride grid does not (so the alignment is what makes it right)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU6(),
                        nn.Conv2d(4, 4, 3, padding=1, stride=2)).eval()
    gm = fx.symbolic_trace(net)
    stride = R._unit_stride(_whole(gm), dict(gm.named_modules()))
    assert stride == (4, 4)
    x = torch.randn(2, 4, 37, 41)
    full = net(x)
    gen = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(20):
        rows, cols = R._window(37, 41, 24, stride, gen)
        assert rows.start % 4 == 0 and cols.start % 4 == 0
        assert rows.stop - rows.start == 24 and cols.stop - cols.start == 24 and rows.stop <= 37 and cols.stop <= 41
        corners.add((rows.start, cols.start))
        out = net(x[:, :, rows, cols])
        r, c = rows.start // 4, cols.start // 4
        torch.testing.assert_close(out[..., 1:5, 1:5], full[..., r + 1:r + 5, c + 1:c + 5])
    assert len(corners) > 3
    shifted = net(x[:, :, 2:26, 0:24])
    assert not torch.allclose(shifted[..., 1:5, 1:5], full[..., 1:5, 1:5])


@pytest.mark.parametrize("tail, local", [
    (lambda x: F.relu(x + x), True),
    (lambda x: F.max_pool2d(x, 2), False),  # strides in the arguments: full map, to be safe
    (lambda x: x * torch.sigmoid(F.adaptive_avg_pool2d(x, 1)), False),  # squeeze-and-excitation
    (lambda x: x.mean((2, 3), keepdim=True) + x, False),
    (lambda x: x.flatten(1), False),
])
def test_global_ops_keep_the_full_map(tail, local):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return tail(self.conv(x))

    gm = fx.symbolic_trace(Net())
    assert (R._unit_stride(_whole(gm), dict(gm.named_modules())) is not None) == local


def test_units_cropped_where_local_and_wider_than_the_crop():
    model = _strided()
    calib = torch.randn(32, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig(w_bits=4, a_bits=4))
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=5, batch_size=8, crop=16))
    crops = {u["unit"]: u["crop"] for u in out.reconstruction["units"]}
    # conv1 (40×40) and the strided conv (40×40 in) learn on 16×16 windows; the residual block (20×20 in)
    # holds the global pool, the classifier reads a vector: both use the full map
    assert crops == {"conv1": 16, "conv2": 16, "conv3": None, "fc": None}


def test_maps_no_wider_than_the_crop_train_exactly_as_full_maps():
    model = make_tiny()  # 8×8 maps
    calib = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig(w_bits=4, a_bits=4))
    runs = [reconstruct(model, sim, calib, ReconstructConfig(iters=10, batch_size=8, crop=c), seed=2) for c in (0, 8)]
    a, b = (dict(r.state_dict()) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].encodings() == runs[1].encodings()
    assert all(u["crop"] is None for u in runs[1].reconstruction["units"])


def test_cropped_reconstruction_lowers_the_error_and_is_deterministic():
    model = _strided()
    calib = torch.randn(64, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig.starting_point(3, 4))  # MSE-clipped start, as below 8 bits
    config = ReconstructConfig(iters=120, batch_size=16, crop=16)
    out = reconstruct(model, sim, calib, config, seed=0)
    again = reconstruct(model, sim, calib, config, seed=0)
    assert out.encodings() == again.encodings()
    assert all(torch.equal(p, q) for p, q in zip(out.state_dict().values(), again.state_dict().values()))
    x = torch.randn(128, 3, 40, 40, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref = fold_bn(model)(x)
        err_out, err_rtn = (float((m(x) - ref).pow(2).mean()) for m in (out, sim))
    assert err_out < 0.5 * err_rtn, (err_out, err_rtn)  # measured: 0.16×


@pytest.mark.parametrize("drop", [False, True])
def test_fused_fake_quant_matches_autograd_of_the_plain_formula(drop):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 5, 6, 6, generator=gen) * 3).requires_grad_()
    log_s = torch.tensor(-1.0, requires_grad=True)
    keep = torch.rand(x.shape, generator=gen) < 0.5 if drop else None
    g = torch.randn(x.shape, generator=gen)
    s = log_s.exp()
    xs = x / s
    plain = (torch.clamp((torch.round(xs) - xs).detach() + xs + 3, 0, 15) - 3) * s  # straight-through rounding
    plain = torch.where(keep, x, plain) if drop else plain
    gx, gs = torch.autograd.grad((plain * g).sum(), (x, log_s))
    fused = R._FakeQuant.apply(x, log_s.exp(), 3.0, 15, keep)
    fx_, fs = torch.autograd.grad((fused * g).sum(), (x, log_s))
    assert torch.equal(fused, plain)
    torch.testing.assert_close(fx_, gx)
    torch.testing.assert_close(fs, gs)


def test_batch_crop_and_lr_chosen_by_image_size():
    config = ReconstructConfig()
    assert (config.batch_size, config.crop, config.lr) == (None, None, None)
    small, large = config.for_images(32, 32), config.for_images(224, 224)
    assert (small.batch_size, small.crop, small.lr) == (32, 0, 1e-3)  # CIFAR: full maps, 32 images a step, as before
    assert (large.batch_size, large.crop, large.lr) == (8, 16, 1e-2)  # noisy window steps want a larger Adam step
    given = ReconstructConfig(batch_size=4, crop=0, lr=3e-3)
    assert given.for_images(224, 224) == given
    model = make_tiny()
    calib = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sim = quantize(model, calib, QuantConfig(w_bits=4, a_bits=4))
    auto = reconstruct(model, sim, calib, ReconstructConfig(iters=5))
    fixed = reconstruct(model, sim, calib, ReconstructConfig(iters=5, batch_size=32, crop=0))
    assert auto.encodings() == fixed.encodings()
    assert auto.reconstruction["config"]["batch_size"] == 32 and auto.reconstruction["config"]["crop"] == 0
