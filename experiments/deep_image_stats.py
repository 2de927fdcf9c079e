"""What changes in gzsq's distilled images as a CIFAR ResNet gets deeper? Per source, per depth.

    python experiments/deep_image_stats.py > results/deeper_resnet/image_stats.txt       # seed 0

For ResNet-20/-32/-44 (../shared checkpoints) and the ResNet-56 of deeper_resnet.py (runs/, not shipped), the sets a
W4A4 job would reconstruct on: gzsq's `half-local` (what `auto` picks there; its local and propagated halves shown
apart), Gaussian noise, and 256 CIFAR-10 test images of every class (every 39th; only ever measured). Per source:
- the per-channel std of every Conv output (and of the propagated targets) against real images' (median over
  channels of the log ratio, as a ratio; median over the first, middle and last third of the convs) and the share of
  each Conv's input channels that are zero on every image (dead ReLUs);
- the pooled feature the classifier reads: participation ratio of its covariance's eigenvalues (how many directions
  the set spreads over) and the mean cosine between two images' features;
- the classes FP32 predicts for the set: how many distinct, and the entropy of their histogram (bits; 3.32 = even).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assets import CIFAR_RESNETS, CIFAR_TEST, TRAINED_HERE, cifar_checkpoint, every_class  # noqa: E402

from gzsq.config import SourceOptions  # noqa: E402
from gzsq.data import load_eval_set  # noqa: E402
from gzsq.fold import fold_bn  # noqa: E402
from gzsq.models import load_model  # noqa: E402
from gzsq.sources.gzsq import PRESETS, layer_targets  # noqa: E402
from gzsq.sources.registry import make_calibration  # noqa: E402

MODELS = [*CIFAR_RESNETS, *TRAINED_HERE]


def measure(net, images):
    convs = {k: m for k, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    stds, dead, feats = {}, {}, {}

    def hook(m, i, o, k):
        stds[k] = o.transpose(0, 1).flatten(1).std(1)
        dead[k] = float((i[0].amax((0, 2, 3)) <= 0).float().mean())
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: hook(m, i, o, k)) for k, m in convs.items()]
    pool = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    hooks.append(pool.register_forward_hook(lambda m, i, o: feats.__setitem__("x", i[0])))
    with torch.no_grad():
        logits = net(images)
    for h in hooks:
        h.remove()
    return stds, dead, feats["x"], logits.argmax(1)


def feature_summary(x, pred):
    x = x.double()
    ev = torch.linalg.eigvalsh(torch.cov(x.T)).clamp_min(0)
    pr = float(ev.sum() ** 2 / (ev ** 2).sum())
    u = torch.nn.functional.normalize(x, dim=1)
    cos = float(((u @ u.T).sum() - len(u)) / (len(u) * (len(u) - 1)))
    counts = np.bincount(pred.numpy(), minlength=10) / len(pred)
    nz = counts[counts > 0]
    return pr, cos, int((counts > 0).sum()), float(-(nz * np.log2(nz)).sum())


def thirds(values) -> str:
    return " ".join(f"{float(np.median(p)):.2f}" for p in np.array_split(np.array(values), 3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"$ python experiments/deep_image_stats.py {' '.join(sys.argv[1:])}")
    print("source: conv std / real std (median, first|middle|last third of convs) | dead conv-input channels "
          "(first|middle|last) | pooled feature: participation ratio, mean cosine | FP32 classes: distinct, entropy")
    for name in args.models.split(","):
        model = load_model(name, cifar_checkpoint(name))
        net = fold_bn(model).eval()
        real = every_class(load_eval_set(model, str(CIFAR_TEST)).images, 256).float()
        gz = make_calibration("gzsq", model, 256, seed=args.seed, options=SourceOptions(preset="half-local"))
        noise = make_calibration("gaussian", model, 256, seed=args.seed).images
        sets = {"real": real, "noise": noise, "gzsq half-local": gz.images,
                "  local half": gz.images[:128], "  propagated half": gz.images[128:]}
        ref, _, _, _ = measure(net, real)
        print(f"\n{name} (distilled in {gz.seconds:.0f} s)")
        targets = layer_targets(net, PRESETS["default"].targets)
        ratios = [float(np.exp(np.median(torch.log(targets[k][1] / (ref[k] + 1e-8)).numpy()))) for k in ref]
        print(f"  {'propagated targets':18s} std {thirds(ratios)}")
        for label, imgs in sets.items():
            stds, dead, feat, pred = measure(net, imgs)
            ratios = [float(np.exp(np.median(torch.log((stds[k] + 1e-8) / (ref[k] + 1e-8)).numpy()))) for k in ref]
            d = list(dead.values())
            pr, cos, ncls, ent = feature_summary(feat, pred)
            print(f"  {label:18s} std {thirds(ratios)} | dead {thirds(d)} | PR {pr:5.1f} cos {cos:.2f} | "
                  f"classes {ncls:2d} H {ent:.2f}")


if __name__ == "__main__":
    main()
