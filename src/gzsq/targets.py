"""Substitute activation statistics from the weights alone (the paper's stages 1–2; docs/how-it-works.md §1).

`weight_targets(model, ...)` walks the folded network's data-flow graph and
assigns every tensor a (mean, std) vector per channel, starting from N(0, 1)
at the input; every Conv2d/Linear output (before its activation) becomes a
target for distillation. Two propagation rules:

- `paper`: the paper's recursion, μ(n) = μ_W(n) + μ(n−1) + b_n and
  σ(n) = sqrt(σ_W(n)² + σ(n−1)²), with μ_W, σ_W the mean/std of each output
  channel's weights, and ESA filling entries when channel counts change.
- `moments`: the moments a linear layer actually maps (inputs assumed independent):
  E[y_c] = Σ_i (Σ_k W_cik) E[x_i] + b_c and Var[y_c] = Σ_i (Σ_k W_cik²) Var[x_i].
  Still weights only; no channel-count adjustment is needed since every output
  channel sums over its real inputs. `coherence` ρ interpolates the variance
  between independent pixels (ρ=0) and pixels constant over the kernel window
  (ρ=1, Var = Σ_i (Σ_k W_cik)² Var[x_i]): real images are smooth, so ρ=0
  underestimates spreads. `pixel_correlation` r instead lets the correlation of
  two taps decay with their distance d as r^d (Var = Σ_i w_ci^T C w_ci Var[x_i],
  C_kl = r^d(k,l)), so a zero-sum (edge) kernel keeps a spread that ρ=1 zeroes.

Branches follow the real data flow: a residual add sums means and variances,
a concatenation concatenates, a channel zero-pad (CIFAR option-A shortcut)
appends zero-statistics channels. ReLU/ReLU6 pass statistics unchanged in the
literal reading; `relu_aware=True` uses the rectified-Gaussian moments instead.
`order="sequential"` reproduces the naive reading in which layer n's input is
layer n−1's output in module order, whatever the graph says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .fold import fold_bn
from .graph_ops import ADD_FUNCS, CAT_FUNCS, is_relu, is_relu6

ESA_CANDIDATES = ("min", "mean-min", "mean+min", "mean", "max-mean", "max+mean", "max")


@dataclass
class Stat:
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)


@dataclass
class Targets:
    """Per weight layer (module path → Stat of its output), in forward order."""

    layers: dict[str, Stat] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        rows = [f"{k}: C={len(v.mean)} mean≈{v.mean.mean():.3g} std≈{v.std.mean():.3g}" for k, v in self.layers.items()]
        return "Targets(\n  " + "\n  ".join(rows) + "\n)"


def esa_statistic(v: torch.Tensor, rule: str) -> torch.Tensor:
    """One of the paper's candidate fill values for a vector whose length must change."""
    lo, hi, mid = v.min(), v.max(), v.mean()
    table = {"min": lo, "mean-min": mid - lo, "mean+min": mid + lo, "mean": mid,
             "max-mean": hi - mid, "max+mean": hi + mid, "max": hi}
    if rule not in table:
        raise ConfigError(f"unknown ESA rule {rule!r}; choose one of {', '.join(ESA_CANDIDATES)}")
    return table[rule]


def adjust(stat: Stat, channels: int, rule: str) -> Stat:
    """ESA: truncate when shrinking, fill extra entries with a statistic when growing."""
    c = len(stat.mean)
    if c == channels:
        return stat
    if c > channels:
        return Stat(stat.mean[:channels], stat.std[:channels])
    if c == 1:
        return Stat(stat.mean.expand(channels).clone(), stat.std.expand(channels).clone())
    extra = channels - c
    fill_m = esa_statistic(stat.mean, rule).expand(extra)
    fill_s = esa_statistic(stat.std, rule).abs().expand(extra)
    return Stat(torch.cat([stat.mean, fill_m]), torch.cat([stat.std, fill_s]))


def _rectify(stat: Stat, cap: float | None) -> Stat:
    """Mean and std of max(0, X) (optionally min(·, cap)) for X ~ N(mean, std²)."""
    m, s = stat.mean, stat.std.clamp_min(1e-8)
    a = m / s
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    mean = m * cdf + s * pdf
    second = (m * m + s * s) * cdf + m * s * pdf
    if cap is not None:
        mean = mean.clamp(max=cap)
        second = second.clamp(max=cap * cap)
    return Stat(mean, (second - mean * mean).clamp_min(0).sqrt())


def _layer_paper(layer: nn.Module, x: Stat, per_channel: bool, esa: str) -> Stat:
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0])
    if per_channel:
        mu_w, sd_w = w.mean(1), w.std(1, unbiased=False)
        x = adjust(x, w.shape[0], esa)
        return Stat(mu_w + x.mean + bias, torch.sqrt(sd_w**2 + x.std**2))
    mu = w.mean() + x.mean.mean() + bias.mean()
    sd = torch.sqrt(w.std(unbiased=False) ** 2 + (x.std**2).mean())
    return Stat(mu.reshape(1), sd.reshape(1))


def _tap_correlation(layer: nn.Module, r: float) -> torch.Tensor:
    """(k, k) correlation between a kernel's taps when pixel correlation decays as r^distance."""
    kh, kw = layer.weight.shape[2:] if layer.weight.dim() == 4 else (1, 1)
    dy, dx = getattr(layer, "dilation", (1, 1))
    yy, xx = torch.meshgrid(torch.arange(kh) * dy, torch.arange(kw) * dx, indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).to(layer.weight.dtype)
    return r ** torch.cdist(pos, pos)


def _layer_moments(layer: nn.Module, x: Stat, coherence: float = 0.0, pixel_correlation: float | None = None) -> Stat:
    w = layer.weight.detach()
    groups = getattr(layer, "groups", 1)
    cout = w.shape[0]
    w = w.reshape(cout, w.shape[1], -1)  # (C_out, C_in/groups, k)
    sum_w, sum_w2 = w.sum(-1), (w**2).sum(-1)
    cin_g = w.shape[1]
    # input channels seen by each output channel under grouping
    idx = torch.arange(cout).div(cout // groups, rounding_mode="floor").unsqueeze(1) * cin_g + torch.arange(cin_g)
    xm, xv = x.mean[idx], (x.std**2)[idx]
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(cout)
    if pixel_correlation is None:
        # coherence ρ: 0 = pixels independent within the kernel window, 1 = constant over it (smooth images)
        gain = (1 - coherence) * sum_w2 + coherence * sum_w**2
    else:  # w^T C w per (output, input) channel pair, C the taps' correlation r^distance
        gain = torch.einsum("cik,kl,cil->ci", w, _tap_correlation(layer, pixel_correlation), w)
    return Stat((sum_w * xm).sum(1) + bias, ((gain * xv).sum(1)).clamp_min(0).sqrt())


def one_step(layer: nn.Module, x: Stat, coherence: float = 0.0, depthwise_coherence: float | None = None,
             pixel_correlation: float | None = None) -> Stat:
    """The moments rule for one conv/linear layer given its input's per-channel statistics, as `weight_targets`
    applies it at every layer: what local targets evaluate on the statistics the images show now."""
    rho = depthwise_coherence if depthwise_coherence is not None and is_depthwise(layer) else coherence
    return _layer_moments(layer, x, rho, pixel_correlation)


def is_depthwise(layer: nn.Module) -> bool:
    """A conv that filters each input channel on its own (groups = in_channels > 1)."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


def weight_targets(model: nn.Module, *, rule: str = "paper", per_channel: bool = True, esa: str = "mean+min",
                   relu_aware: bool = False, order: str = "dataflow", coherence: float = 0.0,
                   depthwise_coherence: float | None = None, pixel_correlation: float | None = None) -> Targets:
    """Targets for every Conv2d/Linear output of the (folded) model; see the module docstring.
    `depthwise_coherence`: ρ for depthwise convs (None: `coherence`, as for every other layer).
    `pixel_correlation` r (moments rule): pixels correlate as r^distance within a kernel window, which
    replaces the single coherence ρ (and `depthwise_coherence`) for every conv."""
    if rule not in ("paper", "moments"):
        raise ConfigError(f"unknown propagation rule {rule!r} (paper or moments)")
    if order not in ("dataflow", "sequential"):
        raise ConfigError(f"unknown order {order!r} (dataflow or sequential)")
    if pixel_correlation is not None and not 0.0 <= pixel_correlation <= 1.0:
        raise ConfigError(f"pixel_correlation must be in [0, 1], got {pixel_correlation!r}")
    gm = fold_bn(model)
    modules = dict(gm.named_modules())
    stats: dict[fx.Node, Stat] = {}
    out = Targets(settings=dict(rule=rule, per_channel=per_channel, esa=esa, relu_aware=relu_aware, order=order,
                                 coherence=coherence, depthwise_coherence=depthwise_coherence,
                                 pixel_correlation=pixel_correlation))
    previous_layer: Stat | None = None
    # Which axis holds the channels: 1 in NCHW, moved by permutes (ONNX imports of NHWC graphs wrap
    # ops such as padding in permutes, and a spatial pad must not be read as a channel pad).
    channel_axis: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        first = stats.get(args[0]) if args else None
        channel_axis[node] = _moved_channel_axis(node, channel_axis.get(args[0], 1) if args else 1)
        if node.op == "placeholder":
            stats[node] = Stat(torch.zeros(3), torch.ones(3))
        elif node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            x = previous_layer if (order == "sequential" and previous_layer is not None) else first
            layer = modules[node.target]
            rho = depthwise_coherence if depthwise_coherence is not None and is_depthwise(layer) else coherence
            s = _layer_paper(layer, x, per_channel, esa) if rule == "paper" else _layer_moments(layer, adjust(x, layer.weight.shape[1] * getattr(layer, "groups", 1), esa), rho, pixel_correlation)
            stats[node] = previous_layer = s
            out.layers[node.target] = s
        elif is_relu(node, modules):
            cap = 6.0 if is_relu6(node, modules) else None
            stats[node] = _rectify(first, cap) if relu_aware else first
        elif node.op == "call_function" and node.target in ADD_FUNCS and len(args) == 2:
            a, b = stats[args[0]], stats[args[1]]
            c = max(len(a.mean), len(b.mean))
            a, b = adjust(a, c, esa), adjust(b, c, esa)
            stats[node] = Stat(a.mean + b.mean, torch.sqrt(a.std**2 + b.std**2))
        elif node.op == "call_function" and node.target in CAT_FUNCS:
            parts = [stats[a] for a in node.args[0]]
            stats[node] = Stat(torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts]))
        elif node.op == "call_function" and node.target is F.pad and _channel_pad(node, channel_axis[node]):
            before, after = _channel_pad(node, channel_axis[node])
            z0, z1 = torch.zeros(before), torch.zeros(after)
            stats[node] = Stat(torch.cat([z0, first.mean, z1]), torch.cat([z0, first.std, z1]))
        elif node.op == "output":
            break
        elif first is not None:
            stats[node] = first  # pooling, flatten, slicing, spatial padding, dropout: statistics kept
    return out


def _moved_channel_axis(node: fx.Node, axis: int) -> int:
    """The channel axis of `node`'s output, given its input's: permutes and transposes move it."""
    if node.op == "call_method" and node.target == "permute" or (
            node.op == "call_function" and node.target is torch.permute):
        dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        dims = [d % 4 for d in dims] if all(isinstance(d, int) for d in dims) else []
        return dims.index(axis) if axis in dims else axis
    if node.op == "call_method" and node.target == "transpose" and len(node.args) == 3:
        a, b = (d % 4 for d in node.args[1:]) if all(isinstance(d, int) for d in node.args[1:]) else (-1, -1)
        return b if axis == a else a if axis == b else axis
    return axis


def _channel_pad(node: fx.Node, axis: int = 1, ndim: int = 4) -> tuple[int, int] | None:
    """(before, after) when an F.pad on an `ndim`-d tensor pads its channel axis; F.pad lists the last dim first."""
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    k = ndim - 1 - axis
    if isinstance(pad, (tuple, list)) and len(pad) >= 2 * k + 2 and all(isinstance(p, int) for p in pad):
        if pad[2 * k] or pad[2 * k + 1]:
            return pad[2 * k], pad[2 * k + 1]
    return None
