"""ZeroQ (Cai et al. 2020), the peer: distill images matching BN running statistics.

Each BatchNorm's running mean/std is compared (L2) with the per-channel
statistics of that BN's *input* on the synthetic batch — i.e. the output of the
conv that actually feeds it, wherever it sits in the graph — plus the input
N(0, 1) term. Adam lr 0.5, 500 iterations. BN setting only.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..distillation.loop import DistillConfig, Objective, distill_images
from ..errors import SourceNotApplicableError
from ..models.validate import model_name
from .registry import Calibration, SourceOptions, input_shape, register_source

# ZeroQ's published recipe; like gzsq's paper preset it stops once the loss has not improved
# by 1 % for 30 steps (the iterations actually run are logged).
ZEROQ_RECIPE = DistillConfig(iterations=500, lr=0.5, batch_size=256, loss="l2", early_stop_patience=30)


def _batchnorms(model) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_mean is not None}


def check_zeroq(model, setting: str) -> None:
    if setting == "bn-free" or not _batchnorms(model):
        name = model_name(model)
        why = "the bn-free setting hides them" if _batchnorms(model) else f"{name} has none"
        raise SourceNotApplicableError(f"zeroq needs BatchNorm running statistics; {why} (try --calib gzsq)")


@register_source("zeroq", check=check_zeroq)
def zeroq(model, n: int, *, seed: int, options: SourceOptions) -> Calibration:
    check_zeroq(model, options.setting)
    bns = _batchnorms(model)
    targets = {k: (m.running_mean.detach().clone(), (m.running_var.detach() + m.eps).sqrt()) for k, m in bns.items()}
    config = replace(ZEROQ_RECIPE, **dict(options.overrides)) if options.overrides else ZEROQ_RECIPE
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    images, log = distill_images(model, Objective(targets, read_input=True), n, input_shape(model), config,
                                 seed=seed, num_classes=last.weight.shape[0], progress=options.progress,
                                 desc="zeroq", checkpoint=options.checkpoint)
    return Calibration(images, "zeroq", seed, 0.0, log)
