"""The shared distillation engine: Adam on the pixels (docs/how-it-works.md §2, ZeroQ's recipe).

`distill_images` optimizes a batch of images so that the per-channel
statistics of chosen layers' outputs match targets. It knows nothing about
where targets come from: gzsq (weights) and zeroq (BN running statistics)
both hand it a `Objective`. Deterministic for a seed; early-stops when the
loss stops improving; returns the images and a log. Given a `Checkpoint` it
saves its state every K iterations, and resumes from it after an interruption.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import device, distributed, interrupt
from ..config import DistillConfig
from ..errors import ConfigError, DistillationDivergedError
from . import checkpoint as checkpoints
from .checkpoint import Checkpoint
from .losses import LOSSES, channel_correlation, total_variation


@dataclass
class Objective:
    """What to match: target (mean, std) per module path, read at that module's output
    (or input, for BN layers in zeroq), plus the classifier for the cross-entropy term."""

    targets: dict[str, tuple[torch.Tensor, torch.Tensor]]
    read_input: bool = False  # True: statistics of the module's input (zeroq at BN layers)
    # Local targets: (module, input (mean, std)) → target (mean, std) of its output, evaluated on the batch's
    # current input statistics every step (held fixed within the step); `targets` then only names the layers.
    local_rule: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    # With `local_rule`: only the first `local_batches` batches use it, the rest match the listed targets (None: all).
    local_batches: int | None = None

    def local_in(self, batch_index: int) -> bool:
        """Whether batch `batch_index` is matched to local targets."""
        return self.local_rule is not None and (self.local_batches is None or batch_index < self.local_batches)


class _ChannelMoments(torch.autograd.Function):
    """Per-channel mean and (biased) variance of an (N, C, ...) tensor, over every dim but C.

    Why a hand-written Function: the statistics are taken at ~20 layers every
    step, and autograd through `mean`, subtract, square, `mean` made them cost
    as much as the network's own forward and backward. Here the forward is one
    pass for the sums and one fused multiply-reduce for the squares, and the
    backward is a single multiply-add: d/dx = g_mean/n + 2 g_var (x − mean)/n.
    Variance as E[x²] − mean² loses precision only when |mean| ≫ std by ~10³,
    far beyond what layer outputs show.

    Sums are taken per image first, then over images in order: under torchrun each rank holds some
    of the images, the per-image sums of all ranks are gathered and added in the same order, so every
    rank gets the bits one process gets (a conv's output and input gradient for one image do not
    depend on which other images share its batch).
    """

    @staticmethod
    def forward(ctx, x, n_batch):
        channels = x.shape[1]
        n = x.shape[0]
        if x.dim() == 2:
            total, squares = x, x * x
        elif x.is_contiguous():
            rows = x.reshape(n, channels, -1)
            total, squares = rows.sum(2), torch.linalg.vecdot(rows, rows)
        else:  # channels_last and other layouts: reduce each channel's column of the (pixels, C) view
            cols = x.movedim(1, -1).reshape(n, -1, channels)
            total, squares = cols.sum(1), (cols * cols).sum(1)
        count = n_batch * (x.numel() // (n * channels))
        total = distributed.gather_shards(total, n_batch).sum(0)
        squares = distributed.gather_shards(squares, n_batch).sum(0)
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        ctx.save_for_backward(x, mean)
        ctx.count = count
        return mean, var

    @staticmethod
    def backward(ctx, grad_mean, grad_var):
        x, mean = ctx.saved_tensors
        scale = 2 * grad_var / ctx.count
        shift = grad_mean / ctx.count - scale * mean
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(shape), x, scale.view(shape)), None


def _channel_stats(t: torch.Tensor, n_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of a layer output over the whole batch of `n_batch` images, differentiable
    (see `_ChannelMoments`)."""
    mean, var = _ChannelMoments.apply(t, n_batch)
    return mean, var.add(1e-8).sqrt()


def _per_image_loss(captured: dict[str, torch.Tensor], targets: dict, loss_fn) -> torch.Tensor:
    """Each image's own distance to this step's targets, averaged over the layers with spatial outputs: (N,).

    An image's per-channel (mean, std) over its positions against the layer's (mean, std) target."""
    terms = []
    for name, (mu, sigma) in targets.items():
        t = captured[name]
        if t.dim() < 3:  # one value per image and channel: no spread of its own
            continue
        flat = t.flatten(2)
        terms.append(loss_fn(flat.mean(2), flat.var(2, unbiased=False).add(1e-8).sqrt(), mu, sigma))
    if not terms:
        first = captured[next(iter(targets))]
        return first.new_zeros(len(first))
    return torch.stack(terms).mean(0)


def _batch_mean(per_image: torch.Tensor, n_batch: int) -> tuple[torch.Tensor, float]:
    """Mean over the whole batch of a per-image quantity this rank holds part of. → (the part whose
    gradient is this rank's, the whole batch's value: the same bits on every rank and in one process)."""
    value = distributed.gather_shards(per_image.detach(), n_batch).sum() / n_batch
    return per_image.sum() / n_batch, float(value)


def spatial_frequency(h: int, w: int, device=None) -> torch.Tensor:
    """|f| in cycles per pixel for each coefficient of an H×W `torch.fft.rfft2` (shape H × (W // 2 + 1))."""
    fy = torch.fft.fftfreq(h, device=device).abs()[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fy * fy + fx * fx)


def _spectral_filter(x: torch.Tensor, slope: float) -> torch.Tensor:
    """x (…, H, W) with each spatial frequency's amplitude times f^−slope (f in cycles per pixel; the zero
    frequency weighed as the lowest nonzero one), the filter scaled to a mean square of 1 over frequencies."""
    h, w = x.shape[-2:]
    f = spatial_frequency(h, w, x.device)
    f[0, 0] = 1.0 / max(h, w)
    gain = f.pow(-slope)
    gain = gain / gain.pow(2).mean().sqrt()
    return torch.fft.irfft2(torch.fft.rfft2(x.float()) * gain, s=(h, w))


def natural_noise(white: torch.Tensor, slope: float, colour: float) -> torch.Tensor:
    """White noise (N, C, H, W) given two statistics of natural images, then scaled to unit variance.

    An amplitude spectrum ∝ 1/f^slope (slope 1: natural images' smoothness, neighbouring pixels nearly equal,
    far ones independent) and a correlation `colour` between channels. No image content, only the
    correlations that deep layers, which sum over wide windows and all channels, respond to and white noise
    lacks. The zero frequency gets the lowest nonzero frequency's weight, so each image keeps a mean of its own.
    """
    x = white
    if slope:
        x = _spectral_filter(x, slope)
        x = x / x.std()
    if colour and x.shape[1] > 1:
        shared = x.mean(1, keepdim=True) * x.shape[1] ** 0.5
        x = colour ** 0.5 * shared + (1.0 - colour) ** 0.5 * x
    return (x - x.mean()) / x.std()


def distill_images(model: nn.Module, objective: Objective, n: int, shape: tuple[int, int, int],
                   config: DistillConfig, *, seed: int = 0, pixel_bounds=None, num_classes: int | None = None,
                   progress: bool = False, desc: str = "distill",
                   checkpoint: Checkpoint | None = None) -> tuple[torch.Tensor, dict]:
    """Optimize n images of `shape` so the model's layer statistics match `objective`; → (images, log).

    Images start from N(0, 1) (seeded) and are optimized in batches of `config.batch_size` with
    Adam on the pixels; the loss at every target layer compares the batch's per-channel (mean,
    std) with the target's (`config.loss`), plus the optional input, total-variation and
    cross-entropy terms; with `config.augment_crop_scale` the model sees a random crop of each image
    every step. Only `config.images_to_optimize` images are optimized: the rest of the n are flips
    and shifts, or crops, of them, made after `config.centre_colour` and `config.channel_std_share`
    have set the optimized images' colour channels. `pixel_bounds` (low, high), with
    `config.clamp_pixels`, keeps pixels valid. A NaN/Inf loss stops with DistillationDivergedError.
    Ctrl-C is acted on at the start of each step, after the steps done so far were saved to
    `checkpoint`. The log holds the iterations run per batch, final losses, the first batch's loss
    curve and the seconds taken.
    """
    if distributed.active() and config.decorrelation_weight:
        raise ConfigError("decorrelation_weight is not available under torchrun: its term needs every image's "
                          "features in one process")
    if distributed.active():
        checkpoint = None  # each rank holds only its share of the images: --resume is for one process
        progress = progress and distributed.is_main()
    dev = device.current()  # the model and images go there; random draws stay on the CPU
    model = device.on_device(model).eval()
    if dev.type != "cpu":
        objective = replace(objective, targets={k: (m.to(dev), s.to(dev)) for k, (m, s) in objective.targets.items()})
        if pixel_bounds is not None:
            pixel_bounds = tuple(b.to(dev) if isinstance(b, torch.Tensor) else b for b in pixel_bounds)
    tv_scale = 1.0  # the total variation on the [0, 1] pixel scale: differences over each channel's range width
    if config.tv_weight and config.tv_on_pixels:
        if pixel_bounds is None:
            raise ConfigError("tv_on_pixels needs the model's pixel range")
        tv_scale = 1.0 / torch.as_tensor(pixel_bounds[1] - pixel_bounds[0], dtype=torch.float32).to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    # Images in channels-last order: oneDNN's convolutions (forward and input-gradient) run faster
    # on them. The model is converted in place and given back in the default layout when done.
    layout = torch.channels_last if len(shape) == 3 else torch.contiguous_format
    model.to(memory_format=layout)
    modules = dict(model.named_modules())
    missing = [k for k in objective.targets if k not in modules]
    if missing:
        raise ConfigError(f"targets name modules the model lacks: {missing[:3]}")
    loss_fn = LOSSES[config.loss]
    captured: dict[str, torch.Tensor] = {}
    captured_inputs: dict[str, torch.Tensor] = {}
    key = checkpoints.run_key(checkpoint, objective, n, shape, config, seed, num_classes) if checkpoint else ""
    saved = checkpoints.load_checkpoint(checkpoint, key) if checkpoint else None

    def hook(name):
        def fn(module, inputs, output):
            captured[name] = inputs[0] if objective.read_input else output
            if objective.local_rule is not None:
                captured_inputs[name] = inputs[0]
        return fn

    gen = torch.Generator().manual_seed(seed)
    n_opt = config.images_to_optimize(n, shape)
    batch_starts = list(range(0, n_opt, config.batch_size))
    steps = [config.local_iterations if objective.local_in(bi) and config.local_iterations else config.iterations
             for bi in range(len(batch_starts))]
    batches, curves, iters_run = [], [], []
    first_batch, earlier_seconds = 0, 0.0
    if saved is not None:
        kept = [min(config.batch_size, n_opt - b0) for b0 in batch_starts]
        checkpoints.check_state(saved, [max(2, k) for k in kept], kept, shape, steps, checkpoint.path)
        batches, curves, iters_run = list(saved["batches"]), list(saved["curves"]), list(saved["iters_run"])
        first_batch, earlier_seconds = saved["batch"], saved["seconds"]
        try:
            gen.set_state(saved["gen"])
        except RuntimeError:
            raise checkpoints.damaged(checkpoint.path) from None
    start = time.perf_counter()
    done = sum(steps[:first_batch]) + (saved["it"] if saved is not None else 0)
    handles = [modules[k].register_forward_hook(hook(k)) for k in objective.targets]
    bar = tqdm(total=sum(steps), initial=done, desc=desc, disable=not progress,
               leave=False)

    def state_now(batch_index, it, x, labels, opt, sched, best, since_best, curve):
        return {"key": key, "batch": batch_index, "it": it, "batches": batches, "curves": curves,
                "iters_run": iters_run, "x": None if x is None else x.detach().cpu().clone(),
                "labels": None if labels is None else labels.cpu(),
                "opt": None if opt is None else opt.state_dict(), "sched": None if sched is None else sched.state_dict(),
                "best": best, "since_best": since_best, "curve": curve, "gen": gen.get_state(),
                "seconds": earlier_seconds + time.perf_counter() - start}

    try:
        for bi in range(first_batch, len(batch_starts)):
            b0 = batch_starts[bi]
            size = min(config.batch_size, n_opt - b0)
            if size < 2:  # statistics need at least two images; borrow one more
                size = 2
            resuming = saved is not None and bi == saved["batch"] and saved["x"] is not None
            local = objective.local_in(bi)
            if resuming:
                # a fresh tensor of its own, as an uninterrupted run's is (not the one read from the file)
                x = saved["x"].to(dev).clone().contiguous(memory_format=layout).requires_grad_(True)
                labels = saved["labels"].to(dev)
            else:
                x = torch.randn((size,) + tuple(shape), generator=gen)
                if (config.init_spectrum or config.init_colour) and x.dim() == 4:
                    x = natural_noise(x, config.init_spectrum, config.init_colour)
                labels = torch.randint(num_classes or 1, (size,), generator=gen)
                if distributed.active():  # every rank draws the whole batch, then keeps its share
                    if size < distributed.size():
                        raise ConfigError(f"a batch of {size} images cannot be shared by {distributed.size()} "
                                          "processes; use fewer processes or more images")
                    x, labels = x[distributed.shard(size)], labels[distributed.shard(size)]
                x = x.to(dev).contiguous(memory_format=layout).requires_grad_(True)
                labels = labels.to(dev)
            opt = torch.optim.Adam([x], lr=config.lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=20, min_lr=1e-4)
            best, since_best, curve, it0 = float("inf"), 0, [], 0
            if resuming:
                try:
                    opt.load_state_dict(saved["opt"])
                    sched.load_state_dict(saved["sched"])
                    checkpoints.check_adam(opt, x)
                except (KeyError, TypeError, ValueError, RuntimeError, IndexError):
                    raise checkpoints.damaged(checkpoint.path) from None
                best, since_best, curve, it0 = saved["best"], saved["since_best"], list(saved["curve"]), saved["it"]
            for it in range(it0, steps[bi]):
                if distributed.any_rank(interrupt.requested("distill")):  # keep the steps done so far, then stop
                    if checkpoint and it > it0:
                        checkpoints.save_checkpoint(checkpoint, state_now(bi, it, x, labels, opt, sched, best, since_best,
                                                               curve))
                    interrupt.check()
                opt.zero_grad(set_to_none=True)
                if config.augment_crop_scale and x.dim() == 4:
                    logits = model(_augmented_view(x, config.augment_crop_scale, size, (seed, bi, it)))
                else:
                    logits = model(x)
                # Every term is a whole-batch quantity built from per-image sums (`_ChannelMoments`,
                # `_batch_mean`): one process and any number of torchrun ranks compute the same bits.
                loss = torch.zeros((), device=dev)
                step_targets = {}
                for name, (mu, sigma) in objective.targets.items():
                    m, s = _channel_stats(captured[name], size)
                    if local:  # the target from this step's input statistics
                        with torch.no_grad():
                            in_stats = _channel_stats(captured_inputs[name], size)
                            mu, sigma = objective.local_rule(modules[name], *in_stats)
                    step_targets[name] = (mu, sigma)
                    loss = loss + loss_fn(m, s, mu, sigma)
                loss = loss / max(1, len(objective.targets))
                if config.decorrelation_weight:  # this process's images: refused under torchrun
                    together = sum(channel_correlation(captured[name]) for name in objective.targets)
                    loss = loss + config.decorrelation_weight * together / max(1, len(objective.targets))
                if config.input_weight:  # all pixels as one channel; unbiased std, as x.std()
                    m, var = _ChannelMoments.apply(x.reshape(len(x), 1, -1), size)
                    pixels = size * x[0].numel()
                    s = (var * (pixels / max(1, pixels - 1))).sqrt()
                    loss = loss + config.input_weight * loss_fn(m, s, torch.zeros(1, device=dev),
                                                                 torch.ones(1, device=dev))
                value = float(loss.detach())
                if config.per_image_weight:
                    part, part_value = _batch_mean(_per_image_loss(captured, step_targets, loss_fn), size)
                    loss, value = loss + config.per_image_weight * part, value + config.per_image_weight * part_value
                if config.tv_weight:
                    part, part_value = _batch_mean(total_variation(x * tv_scale, per_image=True), size)
                    loss, value = loss + config.tv_weight * part, value + config.tv_weight * part_value
                if config.ce_weight and num_classes:
                    ce = nn.functional.cross_entropy(logits, labels, reduction="none")
                    part, part_value = _batch_mean(ce, size)
                    loss, value = loss + config.ce_weight * part, value + config.ce_weight * part_value
                if not torch.isfinite(loss):
                    raise DistillationDivergedError(f"distillation diverged: the loss became {value} at iteration "
                                                    f"{it} (batch {bi + 1}); lower the learning rate or check "
                                                    "the model's weights")
                loss.backward()
                if config.grad_spectrum and x.dim() == 4:  # each image's step shaped like a natural image
                    with torch.no_grad():
                        x.grad = _spectral_filter(x.grad, config.grad_spectrum).contiguous(memory_format=layout)
                opt.step()
                sched.step(value)
                if pixel_bounds is not None and config.clamp_pixels:
                    with torch.no_grad():
                        x.data = x.data.clamp(pixel_bounds[0], pixel_bounds[1])
                curve.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if value < best * 0.99:
                    best, since_best = value, 0
                else:
                    since_best += 1
                if (config.early_stop_patience and since_best >= config.early_stop_patience
                        and it + 1 >= config.min_iterations):
                    bar.update(steps[bi] - it - 1)
                    break
                if checkpoint and (it + 1) % checkpoint.every == 0 and it + 1 < steps[bi]:
                    checkpoints.save_checkpoint(checkpoint, state_now(bi, it + 1, x, labels, opt, sched, best, since_best,
                                                           curve))
            whole = distributed.gather_shards(x.detach().contiguous(), size)
            batches.append(whole[: min(config.batch_size, n_opt - b0)].contiguous())
            curves.append(curve)
            iters_run.append(len(curve))
            if checkpoint and bi + 1 < len(batch_starts):  # a batch boundary: the next one starts fresh
                checkpoints.save_checkpoint(checkpoint, state_now(bi + 1, 0, None, None, None, None, None, None, None))
    finally:
        bar.close()
        for h in handles:
            h.remove()
        model.to(memory_format=torch.contiguous_format)
    images = torch.cat(batches).cpu()
    if (config.centre_colour or config.channel_std_share) and images.dim() == 4:
        images = _set_colour(images, config.centre_colour, config.channel_std_share,
                             pixel_bounds if config.clamp_pixels or config.channel_std_share else None)
    if len(images) < n:
        images = _expand(images, n, gen, config.expand_crop_scale)
    log = {"iterations": iters_run, "local_batches": objective.local_batches,
           "final_loss": [c[-1] for c in curves], "loss_curve": curves[0],
           "seconds": earlier_seconds + time.perf_counter() - start,
           "optimized_images": len(batches and torch.cat(batches)),
           "stopped_early": any(i < s for i, s in zip(iters_run, steps))}
    return images, log


def _augmented_view(x: torch.Tensor, min_area: float, n_batch: int, step: tuple[int, int, int]) -> torch.Tensor:
    """Every image of x as one random flipped crop (area share in [min_area, 1], aspect 3:4 to 4:3), resized back.

    Differentiable (bilinear resampling), so the pixels learn to match their targets through it. The draws depend
    only on (seed, batch, iteration) and are made for the whole batch of n_batch, so a resumed run and every torchrun
    rank's share of the batch see what one uninterrupted process sees.
    """
    seed, batch, it = step
    gen = torch.Generator().manual_seed(((seed * 1_000_003 + batch) * 1_000_033 + it) % (2 ** 63))
    area = min_area + (1.0 - min_area) * torch.rand(n_batch, generator=gen)
    aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(n_batch, generator=gen))
    h, w = x.shape[-2:]
    width = (area * aspect * h / w).sqrt().clamp(max=1.0)  # the crop's share of the width
    height = (area / aspect * w / h).sqrt().clamp(max=1.0)
    flip = torch.where(torch.rand(n_batch, generator=gen) < 0.5, -1.0, 1.0)
    tx = (2 * torch.rand(n_batch, generator=gen) - 1) * (1 - width)
    ty = (2 * torch.rand(n_batch, generator=gen) - 1) * (1 - height)
    zero = torch.zeros(n_batch)
    theta = torch.stack([torch.stack([flip * width, zero, tx], 1), torch.stack([zero, height, ty], 1)], 1)
    if distributed.active():
        theta = theta[distributed.shard(n_batch)]
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _set_colour(images: torch.Tensor, centre: bool, std_share: float, pixel_bounds=None) -> torch.Tensor:
    """Each colour channel shifted to mean 0 over all the images (centre), scaled about its mean to a std of
    std_share × its pixel range (std_share > 0), then clamped to the pixel range."""
    low, high = (None, None) if pixel_bounds is None else (
        torch.as_tensor(b).cpu().to(images.dtype) for b in pixel_bounds)
    mean = images.mean((0, 2, 3), keepdim=True)
    if centre:
        images, mean = images - mean, torch.zeros_like(mean)
    if std_share:
        if low is None:
            raise ConfigError("channel_std_share needs the model's pixel range")
        width = (high - low).expand_as(mean)
        std = images.std((0, 2, 3), keepdim=True).clamp_min(1e-8)
        images = mean + (images - mean) * (std_share * width / std)
    if low is not None:
        images = images.clamp(low, high)
    return images


def _expand(images: torch.Tensor, n: int, gen: torch.Generator, crop_scale: float = 1.0) -> torch.Tensor:
    """More images from fewer: horizontal flips and small circular shifts of the distilled ones, or, with
    crop_scale < 1, flipped random crops of them (area share in [crop_scale, 1], aspect 3:4 to 4:3) resized back."""
    out = [images]
    total = len(images)
    while total < n:
        src = images[torch.randint(len(images), (len(images),), generator=gen)]
        flip = torch.rand(len(src), generator=gen) < 0.5
        src = torch.where(flip.view(-1, 1, 1, 1), src.flip(-1), src)
        if crop_scale < 1.0:
            out.append(torch.cat([_random_crop(img, crop_scale, gen) for img in src]))
        else:
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            out.append(torch.roll(src, shifts=(dy, dx), dims=(-2, -1)))
        total += len(src)
    return torch.cat(out)[:n]


def _random_crop(image: torch.Tensor, min_area: float, gen: torch.Generator) -> torch.Tensor:
    """One random crop of a (C, H, W) image covering [min_area, 1] of it, resized back to H×W → (1, C, H, W)."""
    h, w = image.shape[-2:]
    area = min_area + (1.0 - min_area) * float(torch.rand((), generator=gen))
    aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(torch.rand((), generator=gen)))
    ch = max(1, min(h, round(math.sqrt(area * h * w / aspect))))
    cw = max(1, min(w, round(math.sqrt(area * h * w * aspect))))
    y0 = int(torch.randint(h - ch + 1, (), generator=gen))
    x0 = int(torch.randint(w - cw + 1, (), generator=gen))
    crop = image[None, :, y0:y0 + ch, x0:x0 + cw]
    return nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
