"""How gzsq's propagated target stds differ from real images' per channel: a scale per layer, or a pattern?

    python experiments/std_dispersion.py cifar10-resnet20 cifar10-resnet32 cifar10-resnet44 \
        cifar10-resnet20-nf cifar10-resnet32-nf > results/fidelity/std_dispersion.txt

For every Conv2d/Linear output of the folded network, the default propagated targets (moments, ReLU-aware, ρ = 1) are
set against the per-channel stds of 256 CIFAR-10 test images, every 39th (every class). Per layer, over the channels:
the median of target / real, the correlation of their logs, the slope of log real on log target, and the spread (std) of
log(target / real). Each is then the median over the layers of the first, middle and last third. A correlation near 1
with a slope near 1 means the channels' pattern is right and only the layer's scale is off.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from assets import CIFAR_TEST, cifar_checkpoint, every_class
from gzsq.data import load_eval_set
from gzsq.fold import fold_bn
from gzsq.models import load_model
from gzsq.targets import weight_targets


def _channel_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = t.transpose(0, 1).flatten(1)
    return flat.mean(1), flat.std(1)


def real_layer_moments(name: str):
    """The model, its folded net and default propagated targets, and each target layer's per-channel
    ((input mean, std), (output mean, std)) on 256 CIFAR-10 test images of every class (every 39th)."""
    model = load_model(name, cifar_checkpoint(name))
    net = fold_bn(model).eval()
    real = every_class(load_eval_set(model, CIFAR_TEST).images, 256).float()
    targets = weight_targets(net, rule="moments", relu_aware=True, coherence=1.0)
    modules = dict(net.named_modules())
    seen = {}
    hooks = [modules[k].register_forward_hook(
        lambda m, i, o, k=k: seen.__setitem__(k, (_channel_stats(i[0]), _channel_stats(o)))) for k in targets.layers]
    with torch.no_grad():
        net(real)
    for h in hooks:
        h.remove()
    return model, net, targets, seen


def layer_rows(name: str) -> list[tuple]:
    _, _, targets, seen = real_layer_moments(name)
    stds = {k: out[1] for k, (_, out) in seen.items()}
    rows = []
    for k, stat in targets.layers.items():
        r, p = stds[k], stat.std
        ok = (r > 1e-6) & (p > 1e-6)
        if int(ok.sum()) < 3:
            continue
        x, y = p[ok].log().numpy(), r[ok].log().numpy()
        rows.append((float(np.exp(np.median(x - y))), float(np.corrcoef(x, y)[0, 1]), float(np.polyfit(x, y, 1)[0]),
                     float(np.std(y - x))))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    print(f"$ python experiments/std_dispersion.py {' '.join(sys.argv[1:])}")
    print("model, third of the target layers: median target/real std | corr of logs | slope | std of log ratio")
    for name in sys.argv[1:]:
        rows = layer_rows(name)
        n = len(rows)
        for label, part in (("first", rows[:n // 3]), ("middle", rows[n // 3:2 * n // 3]), ("last", rows[2 * n // 3:])):
            med = [float(np.median([r[i] for r in part])) for i in range(4)]
            print(f"{name:22s} {label:6s}  {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f}")


if __name__ == "__main__":
    main()
