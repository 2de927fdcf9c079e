"""Where the propagated targets drift from real images' statistics, one op at a time.

    python experiments/op_dispersion.py cifar10-resnet20 cifar10-resnet32 cifar10-resnet44 \
        cifar10-resnet20-nf cifar10-resnet32-nf > results/fidelity/op_dispersion.txt
    python experiments/op_dispersion.py cifar10-resnet56 > results/deeper_resnet/op_dispersion.txt   # runs/ checkpoint

On 256 CIFAR-10 test images (every 39th: every class), every node of the folded net's fx graph gets its real per-channel mean and
std (an fx Interpreter). For every conv/linear, ReLU and residual add (and the ops weight_targets passes through:
strided slice, channel pad, pooling), the one-op rule of `weight_targets(rule="moments", relu_aware=True,
coherence=1.0)` is applied to the REAL statistics of the op's inputs and set against the real output:
mean error = median over channels of |estimate − real mean| / real std, std ratio = median over channels of
estimate / real std; then the median over the ops of that kind in the first, middle and last third of depth
(thirds of the conv/linear layers, as in mean_dispersion.py; an op belongs to the third of the last layer before it).
For the adds also: the median over channels of the real correlation of the two summands, and the add rule with the
real covariance, var a + var b + 2 cov (exact by construction: a check that the add's whole error is independence).

Second table: how the per-op std ratios chain up. Along the graph, log(std ratio) of the propagated targets is
modelled as the op's own one-op log ratio plus its input's (at an add, the two inputs' mixed by their real variance
share, median over channels); on a chain this is the cumulative product of the per-op ratios. Per third: the
propagated targets' actual std ratio at the conv/linear outputs (median over the layers; mean_dispersion's `prop`),
the chained product, and that product split into the factors each op kind contributes (input: N(0, 1) against the
real input's stds). actual / chained is what the per-op ratios do not explain (e.g. propagated mean errors that a
ReLU turns into std errors).
"""

from __future__ import annotations

import math
import operator
import sys

import numpy as np
import torch
import torch.nn.functional as F
from assets import CIFAR_TEST, cifar_checkpoint, every_class
from torch import fx, nn

from gzsq.data import load_eval_set
from gzsq.fold import fold_bn
from gzsq.graph_ops import is_relu, is_residual_add
from gzsq.models import load_model
from gzsq.targets import Stat, _channel_pad, _rectify, one_step, weight_targets

KINDS = ("input", "conv", "relu", "add", "slice", "pad", "pool")
ONLY = {"all": KINDS, "input": ("input",), "conv": ("conv",), "relu": ("relu",), "add": ("add",),
        "other": ("slice", "pad", "pool")}
ONLY.update({f"all-{k}": tuple(x for x in KINDS if x not in ONLY[k]) for k in ("conv", "relu", "add")})


def load(name: str):
    model = load_model(name, cifar_checkpoint(name))
    net = fold_bn(model).eval()
    return net, every_class(load_eval_set(model, CIFAR_TEST).images, 256).float()


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(0, 1).flatten(1).double()


class Recorder(fx.Interpreter):
    """Per node: real per-channel (mean, std); per residual add: per-channel covariance of its two summands."""

    def __init__(self, gm):
        super().__init__(gm)
        self.stats, self.cov = {}, {}

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.dim() >= 2:
            f = _flat(out)
            self.stats[n] = Stat(f.mean(1), f.std(1))
            if is_residual_add(n):
                a, b = (_flat(self.env[x]) for x in n.args)
                self.cov[n] = ((a - a.mean(1, keepdim=True)) * (b - b.mean(1, keepdim=True))).sum(1) / (a.shape[1] - 1)
        return out


def kind(node: fx.Node, modules: dict) -> str | None:
    if node.op == "placeholder":
        return "input"
    if node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
        return "conv"
    if is_relu(node, modules):
        return "relu"
    if is_residual_add(node):
        return "add"
    if node.op == "call_function" and node.target is F.pad:
        return "pad" if _channel_pad(node) else None
    if node.op == "call_function" and node.target is operator.getitem:
        return "slice"
    if "pool" in str(node.target):
        return "pool"
    return None


def one_op(node: fx.Node, k: str, modules: dict, s: dict, add_cov=None) -> Stat:
    """weight_targets' rule for this node, given statistics `s` of its inputs (`add_cov`: per-channel cov at an add)."""
    args = [a for a in node.args if isinstance(a, fx.Node)]
    if k == "input":
        return Stat(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    x = s[args[0]]
    if k == "conv":
        layer = modules[node.target]
        st = one_step(layer.double(), Stat(x.mean, x.std), coherence=1.0)
        layer.float()
        return st
    if k == "relu":
        return _rectify(x, None)
    if k == "add":
        a, b = s[args[0]], s[args[1]]
        var = a.std ** 2 + b.std ** 2 + (2 * add_cov if add_cov is not None else 0)
        return Stat(a.mean + b.mean, var.clamp_min(0).sqrt())
    if k == "pad":
        before, after = _channel_pad(node)
        z0, z1 = torch.zeros(before, dtype=x.mean.dtype), torch.zeros(after, dtype=x.mean.dtype)
        return Stat(torch.cat([z0, x.mean, z1]), torch.cat([z0, x.std, z1]))
    return x  # slice, pool, flatten, ...: statistics kept


def propagate(net, add_rule=None, real=None, fix=()) -> dict:
    """Targets for every node, as weight_targets propagates them (`add_rule(node, s)` may replace the add's).
    `fix`: op kinds whose own one-op error is removed (needs `real`): their output is the rule's on the propagated
    inputs, shifted by real mean − rule mean and scaled by real std / rule std, both of the rule on the real inputs."""
    modules = dict(net.named_modules())
    s = {}
    for node in net.graph.nodes:
        if node.op == "output":
            break
        k = kind(node, modules)
        if k == "add" and add_rule is not None:
            s[node] = add_rule(node, s)
        elif k is not None:
            s[node] = one_op(node, k, modules, s)
        else:
            s[node] = s[next(a for a in node.args if isinstance(a, fx.Node))]
        if k in fix:
            loc, r = one_op(node, k, modules, real), real[node]
            scale = torch.where(loc.std > 1e-9, r.std / loc.std.clamp_min(1e-9), torch.ones_like(r.std))
            s[node] = Stat(s[node].mean + r.mean - loc.mean, s[node].std * scale)
    return s


def compare(est: Stat, real: Stat) -> tuple[float, float]:
    live = real.std > 1e-6
    return (float(((est.mean - real.mean).abs() / real.std)[live].median()),
            float((est.std / real.std)[live].median()))


def third_of(net, modules) -> dict:
    """Each node's third of depth: that of the last conv/linear at or before it."""
    layers = [n for n in net.graph.nodes if kind(n, modules) == "conv"]
    n_layers, i, out = len(layers), -1, {}
    for node in net.graph.nodes:
        if kind(node, modules) == "conv":
            i += 1
        j = max(i, 0)
        out[node] = 0 if j < n_layers // 3 else 1 if j < 2 * n_layers // 3 else 2
    return out


def analyse(name: str):
    torch.manual_seed(0)
    net, real = load(name)
    modules = dict(net.named_modules())
    rec = Recorder(net)
    with torch.no_grad():
        rec.run(real)
    r = rec.stats
    prop = propagate(net)
    check = weight_targets(net, rule="moments", relu_aware=True, coherence=1.0)
    for node in net.graph.nodes:  # my propagation is weight_targets'
        if kind(node, modules) == "conv":
            assert torch.allclose(prop[node].std.float(), check.layers[node.target].std, rtol=1e-3, atol=1e-5)
    third = third_of(net, modules)
    rows, log_own, parts = [], {}, {}
    for node in net.graph.nodes:
        if node.op == "output":
            break
        k = kind(node, modules)
        args = [a for a in node.args if isinstance(a, fx.Node)]
        live = r[node].std > 1e-6
        if k is None:
            log_own[node] = 0.0
            est = r[args[0]]
        else:
            est = one_op(node, k, modules, r)
            if k in ("conv", "relu", "add", "slice", "pad", "pool", "input"):
                mean_err, ratio = compare(est, r[node])
                row = {"kind": k, "third": third[node], "mean": mean_err, "std": ratio}
                if k == "add":
                    a, b = r[args[0]], r[args[1]]
                    ok = live & (a.std > 1e-6) & (b.std > 1e-6)
                    row["corr"] = float((rec.cov[node] / (a.std * b.std))[ok].median())
                    row["cov_std"] = compare(one_op(node, k, modules, r, rec.cov[node]), r[node])[1]
                rows.append(row)
            log_own[node] = float(torch.log(est.std / r[node].std)[live].median())
        # chained log ratio, split by op kind
        own = {kk: 0.0 for kk in KINDS}
        if k is not None:
            own[k] = log_own[node]
        if k == "add":
            va, vb = r[args[0]].std ** 2, r[args[1]].std ** 2
            share = float((va / (va + vb))[live].median())
            weights = [(args[0], share), (args[1], 1 - share)]
        else:
            weights = [(args[0], 1.0)] if args else []
        parts[node] = {kk: own[kk] + sum(w * parts[p][kk] for p, w in weights) for kk in KINDS}
    chain = []
    for node in net.graph.nodes:
        if kind(node, modules) == "conv":
            live = r[node].std > 1e-6
            actual = float(torch.log(prop[node].std / r[node].std)[live].median())
            chain.append(dict(third=third[node], actual=actual, **parts[node]))
    alone = {}
    for k, kinds in ONLY.items():
        fixed = propagate(net, real=r, fix=tuple(x for x in KINDS if x not in kinds))
        alone[k] = [(third[n], *compare(fixed[n], r[n])) for n in net.graph.nodes if kind(n, modules) == "conv"]
    return rows, chain, alone


def main() -> None:
    torch.set_num_threads(1)
    print(f"$ python experiments/op_dispersion.py {' '.join(sys.argv[1:])}")
    print("\nOne op at a time, on the real statistics of its inputs. model, third, op kind (number of ops): mean error "
          "in real stds | std ratio to real [add: median summand correlation | std ratio with the real covariance]")
    chains, alones = {}, {}
    for name in sys.argv[1:]:
        rows, chains[name], alones[name] = analyse(name)
        for t, label in enumerate(("first", "middle", "last")):
            for k in ("conv", "relu", "add", "slice", "pad", "pool", "input"):
                part = [x for x in rows if x["kind"] == k and x["third"] == t]
                if not part:
                    continue
                def med(key, part=part):
                    return float(np.median([x[key] for x in part]))
                line = f"{name:22s} {label:6s} {k:5s} ({len(part):2d})  {med('mean'):.2f} | {med('std'):.2f}"
                if k == "add":
                    line += f"  [corr {med('corr'):+.2f} | {med('cov_std'):.2f}]"
                print(line)
    print("\nStd ratio chained over ops, at the conv/linear outputs (median over the layers of each third). model, "
          "third: propagated actual | chained product of one-op ratios = input × conv × relu × add × slice/pad/pool "
          "| actual / chained")
    for name, chain in chains.items():
        for t, label in enumerate(("first", "middle", "last")):
            part = [c for c in chain if c["third"] == t]
            def med(key, part=part):
                return math.exp(float(np.median([c[key] for c in part])))
            total = math.exp(float(np.median([sum(c[k] for k in KINDS) for c in part])))
            other = math.exp(float(np.median([c["slice"] + c["pad"] + c["pool"] for c in part])))
            resid = math.exp(float(np.median([c["actual"] - sum(c[k] for k in KINDS) for c in part])))
            print(f"{name:22s} {label:6s}  {med('actual'):.2f} | {total:.2f} = {med('input'):.2f} × {med('conv'):.2f} × "
                  f"{med('relu'):.2f} × {med('add'):.2f} × {other:.2f} | {resid:.2f}")
    print("\nPropagated with only some op kinds' own errors (every other op's one-op error removed), at the conv/linear "
          "outputs (median over the layers of each third). model, third: mean error in real stds / std ratio for "
          + ", ".join(ONLY) + " (all = the propagated targets as they are; all-K: only K's own error removed)")
    for name, alone in alones.items():
        for t, label in enumerate(("first", "middle", "last")):
            cells = []
            for k, vals in alone.items():
                part = [v for v in vals if v[0] == t]
                cells.append(f"{np.median([v[1] for v in part]):.2f} / {np.median([v[2] for v in part]):.2f}")
            print(f"{name:22s} {label:6s}  " + " | ".join(cells))


if __name__ == "__main__":
    main()
