"""Distances between the statistics a batch produces and the target statistics (docs/how-it-works.md §2).

Each takes the batch's per-channel (mean, std) and the target (mean, std), all
vectors of equal length, and returns a scalar averaged over channels. Given (N, C)
statistics, one row per image, each returns N values: one per image.
"""

from __future__ import annotations

import math

import torch

S = 1e-6


def z_score(m: torch.Tensor, s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """GZSQ's absolute Z-score: |m − μ| / sqrt((s + ε)² + (σ + ε)²); no direct pull on s."""
    return ((m - mu).abs() / torch.sqrt((s + S) ** 2 + (sigma + S) ** 2)).mean(-1)


def l2(m: torch.Tensor, s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ZeroQ's distance: squared error on mean and on std (norms, averaged per channel)."""
    return ((m - mu) ** 2).mean(-1) + ((s - sigma) ** 2).mean(-1)


def kl(m: torch.Tensor, s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(m, s²) ‖ N(μ, σ²)), per channel, averaged: pulls on means and spreads alike."""
    s, sigma = s + S, sigma + S
    return (torch.log(sigma / s) + (s**2 + (m - mu) ** 2) / (2 * sigma**2) - 0.5).mean(-1)


LOSSES = {"z": z_score, "l2": l2, "kl": kl}


def channel_correlation(t: torch.Tensor, max_rows: int = 1024) -> torch.Tensor:
    """Mean squared correlation between two different channels of `t` (N, C, ...) over images and positions:
    0 when every channel moves on its own, 1 when all move as one. A spatial stride keeps at most about
    `max_rows` rows (the same positions every step). Distilled images' deep features collapse onto a few
    directions that real images' do not (results/fidelity/input_correlations.txt); this measures it."""
    if t.dim() == 4:
        n, _, h, w = t.shape
        stride = max(1, math.ceil(math.sqrt(n * h * w / max_rows)))
        t = t[:, :, ::stride, ::stride]
    channels = t.shape[1]
    if channels < 2:
        return t.new_zeros(())
    rows = t.movedim(1, -1).reshape(-1, channels)
    z = (rows - rows.mean(0)) / (rows.std(0) + 1e-6)
    corr = z.T @ z / max(1, len(z) - 1)
    return (corr.pow(2).sum() - corr.diagonal().pow(2).sum()) / (channels * (channels - 1))


def total_variation(x: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels: a smoothness prior on images (one value per
    image with `per_image`, whose mean over the images is the batch's value)."""
    if not per_image:
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw
