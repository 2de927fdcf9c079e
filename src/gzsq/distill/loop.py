"""The shared distillation engine: Adam on the pixels (METHOD.md §3, ZeroQ's recipe).

`distill_images` optimizes a batch of images so that the per-channel
statistics of chosen layers' outputs match targets. It knows nothing about
where targets come from: gzsq (weights) and zeroq (BN running statistics)
both hand it a `Objective`. Deterministic for a seed; early-stops when the
loss stops improving; returns the images and a log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, DistillationDivergedError
from .losses import LOSSES, total_variation


@dataclass(frozen=True)
class DistillConfig:
    """One distillation recipe. Defaults are ZeroQ's published ones (METHOD.md §3)."""

    iterations: int = 500
    lr: float = 0.5
    batch_size: int = 64  # images optimized together (statistics are taken over the batch)
    loss: str = "z"  # z | l2 | kl, applied at every target layer
    input_weight: float = 1.0  # weight of the term keeping the input itself N(0, 1)
    tv_weight: float = 0.0  # total-variation image prior
    ce_weight: float = 0.0  # cross-entropy towards random target classes ("enriched" data)
    clamp_pixels: bool = False  # keep every pixel inside the valid image range
    early_stop_patience: int = 0  # stop after this many iterations without 1 % improvement; 0 = never
    min_iterations: int = 0
    distill_images: int = 0  # optimize only this many and make the rest by flips/shifts (0: all)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown distillation loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.iterations < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("distillation needs iterations >= 1, batch_size >= 2 and lr > 0")


@dataclass
class Objective:
    """What to match: target (mean, std) per module path, read at that module's output
    (or input, for BN layers in zeroq), plus the classifier for the cross-entropy term."""

    targets: dict[str, tuple[torch.Tensor, torch.Tensor]]
    read_input: bool = False  # True: statistics of the module's input (zeroq at BN layers)
    extra: dict = field(default_factory=dict)


def _channel_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [0] + list(range(2, t.dim()))
    mean = t.mean(dims)
    std = (t - mean.view((1, -1) + (1,) * (t.dim() - 2))).pow(2).mean(dims).add(1e-8).sqrt()
    return mean, std


def distill_images(model: nn.Module, objective: Objective, n: int, shape: tuple[int, int, int],
                   config: DistillConfig, *, seed: int = 0, pixel_bounds=None, num_classes: int | None = None,
                   progress: bool = False, desc: str = "distill") -> tuple[torch.Tensor, dict]:
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    missing = [k for k in objective.targets if k not in modules]
    if missing:
        raise ConfigError(f"targets name modules the model lacks: {missing[:3]}")
    loss_fn = LOSSES[config.loss]
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, inputs, output):
            captured[name] = inputs[0] if objective.read_input else output
        return fn

    handles = [modules[k].register_forward_hook(hook(k)) for k in objective.targets]
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    n_opt = config.distill_images if 0 < config.distill_images < n else n
    batches, curves, iters_run = [], [], []
    try:
        bar = tqdm(total=-(-n_opt // config.batch_size) * config.iterations, desc=desc, disable=not progress,
                   leave=False)
        for b0 in range(0, n_opt, config.batch_size):
            size = min(config.batch_size, n_opt - b0)
            if size < 2:  # statistics need at least two images; borrow one more
                size = 2
            x = torch.randn((size,) + tuple(shape), generator=gen).requires_grad_(True)
            labels = torch.randint(num_classes or 1, (size,), generator=gen)
            opt = torch.optim.Adam([x], lr=config.lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=20, min_lr=1e-4)
            best, since_best, curve = float("inf"), 0, []
            for it in range(config.iterations):
                opt.zero_grad(set_to_none=True)
                logits = model(x)
                loss = torch.zeros(())
                for name, (mu, sigma) in objective.targets.items():
                    m, s = _channel_stats(captured[name])
                    loss = loss + loss_fn(m, s, mu, sigma)
                loss = loss / max(1, len(objective.targets))
                if config.input_weight:
                    m, s = x.mean(), x.std()
                    loss = loss + config.input_weight * loss_fn(m.view(1), s.view(1), torch.zeros(1), torch.ones(1))
                if config.tv_weight:
                    loss = loss + config.tv_weight * total_variation(x)
                if config.ce_weight and num_classes:
                    loss = loss + config.ce_weight * nn.functional.cross_entropy(logits, labels)
                value = float(loss.detach())
                if not torch.isfinite(loss):
                    raise DistillationDivergedError(f"distillation loss became {value} at iteration {it}; "
                                                    "lower the learning rate")
                loss.backward()
                opt.step()
                sched.step(value)
                if pixel_bounds is not None and config.clamp_pixels:
                    with torch.no_grad():
                        x.data = torch.max(torch.min(x.data, pixel_bounds[1]), pixel_bounds[0])
                curve.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if value < best * 0.99:
                    best, since_best = value, 0
                else:
                    since_best += 1
                if (config.early_stop_patience and since_best >= config.early_stop_patience
                        and it + 1 >= config.min_iterations):
                    bar.update(config.iterations - it - 1)
                    break
            batches.append(x.detach()[: min(config.batch_size, n_opt - b0)])
            curves.append(curve)
            iters_run.append(len(curve))
        bar.close()
    finally:
        for h in handles:
            h.remove()
    images = torch.cat(batches)
    if len(images) < n:
        images = _expand(images, n, gen)
    log = {"iterations": iters_run, "final_loss": [c[-1] for c in curves], "loss_curve": curves[0],
           "seconds": time.perf_counter() - start, "optimized_images": len(batches and torch.cat(batches)),
           "stopped_early": any(i < config.iterations for i in iters_run)}
    return images, log


def _expand(images: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """More images from fewer: horizontal flips and small circular shifts of the distilled ones."""
    out = [images]
    total = len(images)
    while total < n:
        src = images[torch.randint(len(images), (len(images),), generator=gen)]
        flip = torch.rand(len(src), generator=gen) < 0.5
        src = torch.where(flip.view(-1, 1, 1, 1), src.flip(-1), src)
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
        out.append(torch.roll(src, shifts=(dy, dx), dims=(-2, -1)))
        total += len(src)
    return torch.cat(out)[:n]
