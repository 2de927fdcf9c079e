"""Where the weight-derived targets go wrong: one layer's rule, or what the layers before hand it?

    python experiments/target_error_decomposition.py --threads 1    # writes results/fidelity/target_decomposition.md

For every Conv2d/Linear output of the folded network, the default targets (moments, ReLU-aware, ρ = 1) are
compared with the statistics real images produce, two ways:

- one step: the layer's rule applied to the *real* statistics of its own input (so only that layer's
  assumptions are tested: pixels coherent over the kernel, channels independent);
- propagated: the targets gzsq distills to, which start from N(0, 1) at the input and carry every earlier
  layer's error.

Columns: median over channels of target std / real std (1 is right) and of (target mean − real mean) / real
std (0 is right). The same for every ReLU's rectified-Gaussian step given its real input. Real images: 256
CIFAR-10 training images or 64 of the ImageNet sample (seed 0); channels whose real std is ~0 are left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from gzsq.atomic import atomic_write_text
from gzsq.data import load_dataset
from gzsq.fold import fold_bn
from gzsq.graph_ops import is_relu, is_relu6
from gzsq.models import load_model
from gzsq.targets import Stat, _layer_moments, _rectify, adjust, weight_targets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from assets import CIFAR_TRAIN, IMAGENET_SAMPLE as SAMPLE, MOBILENET_V2, SHARED  # noqa: E402
CASES = [("cifar10-resnet20", SHARED / "models/cifar10/resnet20.th", CIFAR_TRAIN, 256),
         ("cifar10-resnet20-nf", None, CIFAR_TRAIN, 256),
         ("cifar10-vgg7-nf", None, CIFAR_TRAIN, 256),
         ("efficientnet-lite0", None, SAMPLE, 64),
         ("mobilenet-v2", MOBILENET_V2, SAMPLE, 64)]


def channel_stats(t: torch.Tensor) -> Stat:
    dims = [0] + list(range(2, t.dim()))
    return Stat(t.mean(dims), t.std(dims))


def compare(pred: Stat, real: Stat) -> tuple[float, float]:
    ok = real.std > 1e-6 * real.std.max().clamp_min(1e-12)
    if not ok.any():
        return float("nan"), float("nan")
    ratio = (pred.std[ok] / real.std[ok]).median()
    shift = ((pred.mean[ok] - real.mean[ok]) / real.std[ok]).median()
    return float(ratio), float(shift)


def _readers(node: fx.Node, modules: dict) -> list[fx.Node]:
    """The nodes that read `node`'s value, looking through identity modules (the no-norm nets' BN slots)."""
    out = []
    for user in node.users:
        if user.op == "call_module" and isinstance(modules[user.target], nn.Identity):
            out += _readers(user, modules)
        else:
            out.append(user)
    return out


@torch.no_grad()
def decompose(gm: fx.GraphModule, images: torch.Tensor) -> list[dict]:
    modules = dict(gm.named_modules())
    values: dict[fx.Node, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            values[node] = result
            return result

    Recorder(gm).run(images)
    targets = weight_targets(gm, rule="moments", relu_aware=True, coherence=1.0).layers
    rows = []
    for node in gm.graph.nodes:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        out = values.get(node)
        if not args or not isinstance(out, torch.Tensor) or out.dim() not in (2, 4):
            continue
        real = channel_stats(out)
        if node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            layer = modules[node.target]
            x = channel_stats(values[args[0]])
            step = _layer_moments(layer, adjust(x, layer.weight.shape[1] * getattr(layer, "groups", 1), "mean+min"), 1.0)
            feeds_relu = any(is_relu(u, modules) for u in _readers(node, modules))
            rows.append(dict(node=node.name, kind="depthwise" if getattr(layer, "groups", 1) > 1 else "conv/linear",
                             feeds_relu=feeds_relu, step=compare(step, real), propagated=compare(targets[node.target], real),
                             real=real))
        elif is_relu(node, modules):
            step = _rectify(channel_stats(values[args[0]]), 6.0 if is_relu6(node, modules) else None)
            rows.append(dict(node=node.name, kind="relu", feeds_relu=False, step=compare(step, real), propagated=None))
    return rows


def folded_with_real_images(name: str, weights, data_path, n: int) -> tuple[fx.GraphModule, torch.Tensor]:
    """A CASES entry → its folded network and n real images drawn with seed 0, normalized for it."""
    model = load_model(name, str(weights) if weights else None)
    data = load_dataset(data_path)
    picked = np.sort(np.random.default_rng(0).choice(len(data), n, replace=False))
    return fold_bn(model), model.input_spec.to_tensor(data.images(picked))


def fmt(pair) -> str:
    return "– | –" if pair is None else f"{pair[0]:.2f} | {pair[1]:+.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default=",".join(c[0] for c in CASES))
    p.add_argument("--pixel-correlation", type=float, nargs="*", default=[0.9, 0.8],
                   help="also propagate with TargetConfig.pixel_correlation = r (one summary column each)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.models.split(",")
    lines = ["# Target error decomposition: one layer's rule vs the errors it inherits", "",
             f"Generated by `python experiments/target_error_decomposition.py --threads {args.threads}`. "
             "Targets: the default (moments, ReLU-aware, ρ = 1), on the folded network. "
             "*one step*: the rule applied to the real statistics of the layer's own input; *propagated*: the targets "
             "gzsq distills to. std ratio: median over channels of target std / real std (1 is right); mean shift: median of "
             "(target mean − real mean) / real std (0 is right).", ""]
    summary = ["## Summary (medians over layers)", "",
               "| model | conv one-step std | conv propagated std | pre-ReLU conv one-step mean shift | "
               "pre-ReLU conv propagated mean shift | ReLU one-step std |", "| --- | --- | --- | --- | --- | --- |"]
    details = []
    alternatives = ["## Propagated std ratio with pixel_correlation r instead of ρ = 1 (median over conv outputs; "
                    "first / last third of them)", "",
                    "| model | ρ = 1 (default) | " + " | ".join(f"r = {r}" for r in args.pixel_correlation) + " |",
                    "| --- | --- |" + " --- |" * len(args.pixel_correlation)]
    for name, weights, data_path, n in CASES:
        if name not in wanted:
            continue
        gm, images = folded_with_real_images(name, weights, data_path, n)
        rows = decompose(gm, images)
        convs = [r for r in rows if r["kind"] != "relu"]
        pre = [r for r in convs if r["feeds_relu"]]
        relus = [r for r in rows if r["kind"] == "relu"]
        med = lambda rs, part, i: statistics.median(r[part][i] for r in rs if r[part] and np.isfinite(r[part][i])) if rs else float("nan")
        summary.append(f"| {name} | {med(convs, 'step', 0):.2f} | {med(convs, 'propagated', 0):.2f} | "
                       f"{med(pre, 'step', 1):+.2f} | {med(pre, 'propagated', 1):+.2f} | {med(relus, 'step', 0):.2f} |")
        details += [f"## {name} ({n} real images)", "",
                    "| tensor | kind | feeds a ReLU | one step: std ratio | one step: mean shift | propagated: std ratio | "
                    "propagated: mean shift |", "| --- | --- | --- | --- | --- | --- | --- |"]
        details += [f"| {r['node']} | {r['kind']} | {'yes' if r['feeds_relu'] else ''} | {fmt(r['step'])} | "
                    f"{fmt(r['propagated'])} |" for r in rows]
        details.append("")
        print(summary[-1], flush=True)
        real_stats = {r["node"]: r["real"] for r in convs}
        cells = []
        for r in [None] + list(args.pixel_correlation):
            t = weight_targets(gm, rule="moments", relu_aware=True, coherence=1.0, pixel_correlation=r).layers
            node_of = {n.target: n.name for n in gm.graph.nodes if n.op == "call_module" and n.target in t}
            ratios = [compare(t[k], real_stats[node_of[k]])[0] for k in t if node_of[k] in real_stats]
            ratios = [x for x in ratios if np.isfinite(x)]
            third = max(1, len(ratios) // 3)
            cells.append(f"{statistics.median(ratios):.2f} ({statistics.median(ratios[:third]):.2f} / "
                         f"{statistics.median(ratios[-third:]):.2f})")
        alternatives.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines + summary + [""] + alternatives + [""] + details)
    atomic_write_text(ROOT / "results/fidelity/target_decomposition.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
