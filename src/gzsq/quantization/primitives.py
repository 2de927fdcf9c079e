"""Quantization arithmetic as plain functions (docs/how-it-works.md §3): choose qparams, fake-quantize.

Weights: symmetric signed, grid q ∈ [−(2^(b−1)−1), 2^(b−1)−1] (restricted range, so
+w and −w quantize alike), one scale per output channel (or per tensor).
Activations: asymmetric unsigned, q ∈ [0, 2^b−1], with an integer zero point; the
range is widened to hold 0 so that zero (padding, ReLU's floor) is exact.
"""

from __future__ import annotations

import torch


_EPS = 1e-12


def weight_scale(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Max-abs scale: shape (C_out,) per channel, or a 0-d tensor per tensor."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        maxabs = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    else:
        maxabs = w.detach().abs().amax()
    return maxabs.clamp_min(_EPS) / qmax


def same_sign_pair_sums(w: torch.Tensor) -> torch.Tensor:
    """Per output channel, the largest |w_k| + |w_k+1| over neighbouring same-sign pairs (k even).

    x86 int8 kernels without VNNI add two neighbouring u8×s8 products in 16 bits; with activations
    ≤ 255 that sum saturates once two same-sign integer weights add past 128. The pairs are taken in
    both orders a GEMM can see a conv's weights in (channels-first and channels-last im2col); a
    2-D (linear) weight has one order. An odd length is padded with a zero.
    """
    w = w.detach().double()
    orders = [w.reshape(len(w), -1)]
    if w.dim() == 4:
        orders.append(w.permute(0, 2, 3, 1).reshape(len(w), -1))
    best = torch.zeros(len(w), dtype=torch.float64)
    for k in orders:
        if k.shape[1] % 2:
            k = torch.cat([k, torch.zeros(len(k), 1, dtype=k.dtype)], dim=1)
        a, b = k[:, 0::2], k[:, 1::2]
        same = torch.sign(a) * torch.sign(b) > 0
        best = torch.maximum(best, torch.where(same, a.abs() + b.abs(), torch.zeros_like(a)).amax(dim=1))
    return best


def pair_safe_scale(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`scale` (an 8-bit weight scale) raised where needed so no neighbouring pair's integers add past 128.

    A pair's integers are at most (|w_k| + |w_k+1|) / s + 2 whether rounded to nearest or learned
    (floor or ceil), so s ≥ pair sum / 126.5 keeps every pair ≤ 128: 255 · 128 fits in 16 bits.
    """
    floor = (same_sign_pair_sums(w) / 126.5).to(scale.dtype)
    return torch.maximum(scale, floor if scale.dim() else floor.amax())


def fake_quant_weight(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    s = scale.reshape((-1,) + (1,) * (w.dim() - 1)) if scale.dim() else scale
    return torch.clamp(torch.round(w / s), -qmax, qmax) * s


def fake_quant_act_fast(x: torch.Tensor, scale: float, zero_point: int, bits: int) -> torch.Tensor:
    """Same values as `fake_quant_act` in one fused native kernel (evaluation hot path)."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 2**bits - 1)


def mse_weight_scale(w: torch.Tensor, bits: int, per_channel: bool = True, grid: int = 80) -> torch.Tensor:
    """Clip each channel's range at the fraction of its max-abs that minimizes squared error."""
    base = weight_scale(w, bits, per_channel)
    flat = w.detach().reshape(w.shape[0], -1) if per_channel else w.detach().reshape(1, -1)
    base_col = base.reshape(-1, 1)
    best_err = torch.full((flat.shape[0],), float("inf"))
    best = base.reshape(-1).clone()
    qmax = 2 ** (bits - 1) - 1
    for frac in torch.linspace(0.3, 1.0, grid):
        s = base_col * frac
        err = ((torch.clamp(torch.round(flat / s), -qmax, qmax) * s - flat) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, s.reshape(-1), best)
    return best if per_channel else best.reshape(())


def act_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """(scale, zero_point) for an unsigned grid over [lo, hi] widened to include 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = 2**bits - 1
    scale = max((hi - lo) / qmax, 1e-8)
    zero_point = int(min(max(round(-lo / scale), 0), qmax))
    return scale, zero_point


def fake_quant_act(x: torch.Tensor, scale: float, zero_point: int, bits: int) -> torch.Tensor:
    qmax = 2**bits - 1
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, qmax)
    return (q - zero_point) * scale
