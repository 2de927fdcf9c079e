"""Does a weights-only estimate of the covariance at residual adds bring the propagated targets closer to real images?

    python experiments/residual_covariance.py cifar10-resnet20 cifar10-resnet32 cifar10-resnet44 \
        cifar10-resnet20-nf cifar10-resnet32-nf > results/fidelity/residual_covariance.txt

weight_targets sums the variances of the two summands of a residual add (independence). For a block y = x + f(x),
f = conv2 ∘ ReLU ∘ conv1, Stein's lemma for Gaussian x gives Cov(x, f(x)) = Cov(x) E[∂f/∂x], with E[ReLU'] = Φ(μ/σ)
of the propagated pre-activation stats; with inputs independent across channels, channel k's covariance is
Var(x_k) · G_kk, where G = Σ over the paths from input channel k back to output channel k:
- `stein1`: pixels constant over the kernel window (ρ = 1, as the targets' variance rule assumes):
  G = S2 diag(Φ) S1, S the kernels' tap sums;
- `stein0`: independent pixels (ρ = 0): only paths whose taps cancel (t2 + stride·t1 = 0; for the stride-2
  downsampling blocks the centre-to-centre path).
Option-A shortcuts (strided slice + channel zero-pad) map output channel k to input channel k − pad; zero-padded
channels get no covariance. The add then uses var a + var b + 2 cov. `oracle`: the real per-channel correlation of
the summands (256 CIFAR-10 test images of every class) times the propagated stds: the most any add correction could give.
Errors at every conv/linear output against 256 CIFAR-10 test images of every class, as in mean_dispersion.py (median
over channels, then over the layers of each third). A second table: the summands' correlation at the adds (median over
channels, then over the adds of each third), real against the Stein estimates on real and on propagated statistics.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from op_dispersion import Recorder, compare, kind, load, propagate, third_of
from torch import fx

from gzsq.targets import Stat, _channel_pad

RULES = ("prop", "stein1", "stein0", "oracle")


def _up(node: fx.Node, modules) -> fx.Node:
    """Skip the ops that keep statistics and have no kind (folded-away BN identities, flatten)."""
    while kind(node, modules) is None:
        node = next(a for a in node.args if isinstance(a, fx.Node))
    return node


def block(node: fx.Node, modules):
    """(conv1, conv2, block input x, channel offset of the shortcut) of an add = conv2(relu(conv1(x))) + shortcut(x)."""
    for branch, skip in (node.args, node.args[::-1]):
        conv2 = _up(branch, modules)
        if kind(conv2, modules) != "conv":
            continue
        relu = _up(conv2.args[0], modules)
        conv1 = _up(relu.args[0], modules) if kind(relu, modules) == "relu" else None
        if conv1 is None or kind(conv1, modules) != "conv":
            continue
        x, s, offset = _up(conv1.args[0], modules), _up(skip, modules), 0
        if kind(s, modules) == "pad":
            offset = _channel_pad(s)[0]
            s = _up(s.args[0], modules)
            s = _up(s.args[0], modules) if kind(s, modules) == "slice" else s
        if s is x:
            return conv1, conv2, x, offset
    return None


def stein_cov(net, modules, node, s, centre_only_paths: bool) -> torch.Tensor | None:
    """Cov(shortcut_k, branch_k) per channel of the add from the weights and the statistics `s` (Stein's lemma)."""
    found = block(node, modules)
    if found is None:
        return None
    conv1, conv2, x, offset = found
    l1, l2 = modules[conv1.target], modules[conv2.target]
    w1, w2 = l1.weight.detach().double(), l2.weight.detach().double()
    pre = s[conv1]
    phi = 0.5 * (1 + torch.erf(pre.mean / pre.std.clamp_min(1e-8) / math.sqrt(2)))  # E[ReLU'] per mid channel
    if not centre_only_paths:
        g = torch.einsum("km,m,mj->kj", w2.sum((2, 3)), phi, w1.sum((2, 3)))
    elif l1.stride == (1, 1):  # taps t2 + t1 = 0: flip conv1's kernel
        g = torch.einsum("kmhw,m,mjhw->kj", w2, phi, w1.flip(2, 3))
    else:
        c2, c1 = [(w.shape[2] // 2, w.shape[3] // 2) for w in (w2, w1)]
        g = torch.einsum("km,m,mj->kj", w2[:, :, c2[0], c2[1]], phi, w1[:, :, c1[0], c1[1]])
    cov = torch.zeros(w2.shape[0], dtype=torch.float64)
    var_x = s[x].std ** 2
    k = torch.arange(offset, offset + len(var_x))
    k = k[k < len(cov)]
    cov[k] = g[k, k - offset] * var_x[k - offset]
    return cov


def add_rule(net, modules, how: str, real_corr: dict):
    def rule(node, s):
        a, b = (s[x] for x in node.args)
        if how == "oracle":
            cov = real_corr[node] * a.std * b.std
        else:
            cov = stein_cov(net, modules, node, s, centre_only_paths=how == "stein0")
            cov = torch.zeros_like(a.std) if cov is None else cov
        return Stat(a.mean + b.mean, (a.std ** 2 + b.std ** 2 + 2 * cov).clamp_min(0).sqrt())
    return rule


def analyse(name: str):
    net, images = load(name)
    modules = dict(net.named_modules())
    rec = Recorder(net)
    with torch.no_grad():
        rec.run(images)
    r, third = rec.stats, third_of(net, modules)
    adds = [n for n in net.graph.nodes if kind(n, modules) == "add"]
    real_corr = {}
    for n in adds:
        sa, sb = (r[x].std for x in n.args)
        ok = (sa > 1e-6) & (sb > 1e-6)
        real_corr[n] = torch.where(ok, rec.cov[n] / (sa * sb).clamp_min(1e-12), torch.zeros_like(sa))
    props = {how: propagate(net, add_rule=None if how == "prop" else add_rule(net, modules, how, real_corr))
             for how in RULES}
    layers = [(third[n], {how: compare(props[how][n], r[n]) for how in RULES})
              for n in net.graph.nodes if kind(n, modules) == "conv"]
    corr = []
    for n in adds:
        sa, sb = (r[x].std for x in n.args)
        ok = (sa > 1e-6) & (sb > 1e-6)
        row = {"real": float(real_corr[n][ok].median())}
        for label, st, centre in (("stein1_real", r, False), ("stein1_prop", props["stein1"], False),
                                  ("stein0_prop", props["stein0"], True)):
            cov = stein_cov(net, modules, n, st, centre)
            pa, pb = (st[x].std for x in n.args)
            row[label] = float((cov / (pa * pb).clamp_min(1e-12))[ok].median()) if cov is not None else 0.0
        corr.append((third[n], row))
    return layers, corr


def main() -> None:
    torch.set_num_threads(1)
    print(f"$ python experiments/residual_covariance.py {' '.join(sys.argv[1:])}")
    print("model, third of the target layers: mean error in real stds (" + " / ".join(RULES) + ") | std ratio to real ("
          + " / ".join(RULES) + ")")
    corrs = {}
    for name in sys.argv[1:]:
        layers, corrs[name] = analyse(name)
        for t, label in enumerate(("first", "middle", "last")):
            part = [x for th, x in layers if th == t]
            means = " / ".join(f"{np.median([x[h][0] for x in part]):.2f}" for h in RULES)
            stds = " / ".join(f"{np.median([x[h][1] for x in part]):.2f}" for h in RULES)
            print(f"{name:22s} {label:6s}  {means} | {stds}")
    print("\nSummands' correlation at the residual adds (median over channels, then over the adds of each third). "
          "model, third (adds): real | Stein ρ=1 on real stats | Stein ρ=1 on propagated | Stein ρ=0 on propagated")
    for name, corr in corrs.items():
        for t, label in enumerate(("first", "middle", "last")):
            part = [x for th, x in corr if th == t]
            cells = " | ".join(f"{np.median([x[k] for x in part]):+.2f}"
                               for k in ("real", "stein1_real", "stein1_prop", "stein0_prop"))
            print(f"{name:22s} {label:6s} ({len(part)})  {cells}")


if __name__ == "__main__":
    main()
