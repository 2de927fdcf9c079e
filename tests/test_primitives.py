"""Property tests for the quantization arithmetic."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gzsq.config import check_bits
from gzsq.errors import ConfigError
from gzsq.quantization import primitives as P

bits_st = st.integers(2, 8)
seed_st = st.integers(0, 10_000)


def _tensor(seed, shape, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


@settings(max_examples=60, deadline=None)
@given(bits=bits_st, seed=seed_st, lo=st.floats(-10, 0), width=st.floats(0.01, 20))
def test_activation_values_land_on_grid_and_error_bounded(bits, seed, lo, width):
    hi = lo + width
    scale, zp = P.act_qparams(lo, hi, bits)
    x = _tensor(seed, (500,), scale=width) + lo
    y = P.fake_quant_act(x, scale, zp, bits)
    q = y / scale + zp
    assert torch.allclose(q, q.round(), atol=1e-3)  # on the integer grid
    assert q.min() >= -1e-3 and q.max() <= 2**bits - 1 + 1e-3
    inside = (x >= min(lo, 0)) & (x <= max(hi, 0))
    assert ((y - x)[inside].abs() <= scale / 2 + 1e-5).all()
    assert torch.equal(P.fake_quant_act(y, scale, zp, bits), y)  # idempotent
    assert P.fake_quant_act(torch.zeros(1), scale, zp, bits).item() == 0.0  # zero is exact
    assert torch.equal(P.fake_quant_act_fast(x, scale, zp, bits), y)  # fused kernel agrees


@settings(max_examples=60, deadline=None)
@given(bits=bits_st, seed=seed_st, per_channel=st.booleans())
def test_weight_quantizer_grid_error_idempotence(bits, seed, per_channel):
    w = _tensor(seed, (6, 3, 3, 3)) * torch.linspace(0.1, 3, 6).view(6, 1, 1, 1)
    scale = P.weight_scale(w, bits, per_channel)
    wq = P.fake_quant_weight(w, scale, bits)
    s = scale.view(-1, 1, 1, 1) if per_channel else scale
    q = wq / s
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert q.abs().max() <= 2 ** (bits - 1) - 1 + 1e-3  # symmetric restricted range
    assert ((wq - w).abs() <= s / 2 + 1e-6).all()  # max-abs scale: everything is in range
    assert torch.allclose(P.fake_quant_weight(wq, scale, bits), wq)


def _pair_sums_of_integers(q: torch.Tensor) -> float:
    """Largest |q_k| + |q_k+1| over same-sign neighbouring pairs, in both orders, checked pair by pair."""
    worst = 0.0
    for order in (q.reshape(len(q), -1), q.permute(0, 2, 3, 1).reshape(len(q), -1)):
        for row in order.tolist():
            row = row + [0.0] * (len(row) % 2)
            for a, b in zip(row[0::2], row[1::2]):
                if a * b > 0:
                    worst = max(worst, abs(a) + abs(b))
    return worst


@settings(max_examples=40, deadline=None)
@given(seed=seed_st, per_channel=st.booleans(), clip=st.floats(0.3, 1.0), shape=st.sampled_from(
    [(4, 3, 3, 3), (5, 8, 1, 1), (3, 7, 3, 3)]))
def test_pair_safe_8bit_grid_keeps_every_same_sign_pair_within_128(seed, per_channel, clip, shape):
    """Rounded to nearest, or up/down as learned rounding may, no two neighbouring integers of one sign add past
    128 (255 · 128 < 2^15), even from a clipped scale; and the grid never gets finer than the one it starts from."""
    w = _tensor(seed, shape)
    w[0].fill_(0.5)  # a channel of equal weights: every pair at the channel's maximum, the worst case
    start = P.weight_scale(w, 8, per_channel) * clip
    scale = P.pair_safe_scale(w, start)
    assert torch.all(scale >= start)
    s = scale.view(-1, 1, 1, 1) if per_channel else scale
    nearest = torch.clamp(torch.round(w / s), -127, 127)
    up_or_down = torch.clamp(torch.where(torch.rand(w.shape, generator=torch.Generator().manual_seed(seed)) < 0.5,
                                         torch.floor(w / s), torch.ceil(w / s)), -127, 127)
    for q in (nearest, up_or_down):
        assert _pair_sums_of_integers(q) <= 128
    assert torch.equal(P.fake_quant_weight(w, scale, 8), nearest * s)  # the simulator's rounding is `nearest`


def test_per_channel_scales_are_per_channel():
    w = torch.zeros(4, 2, 3, 3)
    for c in range(4):
        w[c, 0, 0, 0] = float(c + 1)
    scale = P.weight_scale(w, 8, per_channel=True)
    assert scale.shape == (4,)
    assert torch.allclose(scale, torch.tensor([1.0, 2.0, 3.0, 4.0]) / 127)
    assert P.weight_scale(w, 8, per_channel=False).shape == ()


def test_mse_clipping_never_worse_than_maxabs():
    w = _tensor(0, (8, 16, 3, 3))
    w[0, 0, 0, 0] = 12.0  # an outlier
    for bits in (3, 4, 6):
        e_max = (P.fake_quant_weight(w, P.weight_scale(w, bits), bits) - w).pow(2).sum()
        e_mse = (P.fake_quant_weight(w, P.mse_weight_scale(w, bits), bits) - w).pow(2).sum()
        assert e_mse <= e_max + 1e-6


@pytest.mark.parametrize("bad", [1, 9, 0, 16, 4.0, "8", True])
def test_bits_outside_2_to_8_refused(bad):
    with pytest.raises(ConfigError):
        check_bits(bad)
