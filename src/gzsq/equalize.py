"""Activation equalization: even out a per-tensor-quantized activation's channels before quantizing.

One activation grid serves all of a tensor's channels, so it is sized by the widest, and the narrow channels keep
few levels at 4 bits. Where a layer's output reaches the next weight layer only through ReLU and zero padding,
channel i can be multiplied by s_i > 0 (row i and bias i of the first layer) and divided out again in the second
layer's input channel i without changing the float network for any input (cross-layer equalization, Nagel et al.,
2019; here the scales balance the activations, as the weights are quantized per channel anyway). A depthwise
second layer absorbs the division for free; a dense one spends some of its weight grid on it, which the strength α
trades: s_i = (R / r_i)^α, r_i the channel's largest value on the calibration images and R the tensor's, α per
pair where the second layer's predicted rounding noise is least.

ReLU6 is left alone: min(s·y, 6) ≠ s·min(y, 6) once y passes 6/s, so a channel scaled up by s can only be trusted
up to 6/s, and distilled images' per-channel maxima fall short of real images' (1.67× at the median on MobileNetV2):
scaled on them, real images pass the cap and are clipped, at a cost of 7 pt at W6A6 and 10 pt of int8 agreement on
EfficientNet-Lite2 (results/lowbit/what_limits_reconstruction.md §26).
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

# Ops through which an output channel stays itself and a positive scale passes unchanged.
_PASS_MODULES = (nn.ZeroPad2d, nn.Identity, nn.Dropout)
MAX_SCALE = 16.0  # a channel the calibration images barely excite is scaled up at most this much


def _passes_scale(node: fx.Node, modules: dict) -> bool:
    """Whether f(s·x) = s·f(x) channel by channel for every s > 0: ReLU, zero padding, identities."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.ConstantPad2d):
            return module.value == 0
        return isinstance(module, (nn.ReLU, *_PASS_MODULES))
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu):
            return True
        if node.target is F.pad:
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
            value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
            return mode == "constant" and not value
    return False


def _takes_channels(layer: nn.Module, channels: int) -> bool:
    """Whether input channel i of `layer` can be divided by s_i in its weights alone."""
    if isinstance(layer, nn.Linear):
        return layer.in_features == channels
    if isinstance(layer, nn.Conv2d):
        depthwise = layer.groups == layer.in_channels == layer.out_channels
        return layer.in_channels == channels and (layer.groups == 1 or depthwise)
    return False


def find_pairs(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(first layer, second layer) for every weight layer whose output only the next one reads, through
    ReLU and zero padding alone."""
    modules = dict(gm.named_modules())
    is_layer = lambda n: n.op == "call_module" and isinstance(modules[n.target], (nn.Conv2d, nn.Linear))  # noqa: E731
    pairs = []
    for node in gm.graph.nodes:
        if not is_layer(node):
            continue
        channels = modules[node.target].weight.shape[0]
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            if is_layer(user):
                if user.args[0] is current and _takes_channels(modules[user.target], channels):
                    pairs.append((node.target, user.target))
                break
            if not _passes_scale(user, modules) or user.args[0] is not current:
                break
            current = user
    return pairs


@torch.no_grad()
def channel_ranges(gm: fx.GraphModule, seconds: list[str], calib: torch.Tensor, batch: int = 32) -> dict:
    """Each named layer's input over the calibration images: (every channel's largest value, its mean square)."""
    modules = dict(gm.named_modules())
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def record(_module, inputs):
            x = inputs[0]
            flat = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 4 else x.reshape(-1, x.shape[-1]).T
            top, power = flat.amax(dim=1), flat.double().pow(2).mean(dim=1) * (len(x) / len(calib))
            if name in ranges:
                top, power = torch.maximum(ranges[name][0], top), ranges[name][1] + power
            ranges[name] = (top, power)
        return record

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in seconds]
    try:
        for start in range(0, len(calib), batch):
            gm(calib[start:start + batch])
    finally:
        for handle in handles:
            handle.remove()
    return ranges


STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def scales_for(top: torch.Tensor, strength: float) -> torch.Tensor:
    """s_i = (R / r_i)^strength, between 1 and MAX_SCALE; a channel dead on the calibration images keeps 1."""
    top = top.clamp(min=0).double()
    live = top > 0
    scale = torch.ones_like(top)
    if not live.any():
        return scale.float()
    scale[live] = (top.max() / top[live]) ** strength
    return scale.clamp(1.0, MAX_SCALE).float()


@torch.no_grad()
def apply_scales(gm: fx.GraphModule, scales: dict[tuple[str, str], torch.Tensor]) -> None:
    """Multiply channel i of each first layer's output by s_i and divide it out of the second layer's input."""
    for (first, second), s in scales.items():
        a, b = gm.get_submodule(first), gm.get_submodule(second)
        a.weight.mul_(s.view((-1,) + (1,) * (a.weight.dim() - 1)))
        if a.bias is not None:
            a.bias.mul_(s)
        if isinstance(b, nn.Conv2d) and b.groups > 1:  # depthwise: one input channel per filter
            b.weight.div_(s.view(-1, 1, 1, 1))
        else:
            b.weight.div_(s.view((1, -1) + (1,) * (b.weight.dim() - 2)))


def predicted_noise(second: nn.Module, top: torch.Tensor, power: torch.Tensor, scale: torch.Tensor,
                    w_bits: int, a_bits: int) -> float:
    """The second layer's output noise power from rounding its input (one grid, sized by the widest scaled
    channel) and its weights (one grid per output channel), on max-sized grids: what the scales trade."""
    s, top, power = scale.double(), top.double(), power.double()
    w = second.weight.detach().double()
    step_a = (s * top).max() / (2 ** a_bits - 1)
    if isinstance(second, nn.Conv2d) and second.groups > 1:  # depthwise: filter i reads channel i alone
        rows = w.reshape(w.shape[0], -1) / s.view(-1, 1)
        taps_power = rows.shape[1] * s ** 2 * power  # what each filter's weight errors multiply
    else:  # column block i (its kernel positions) reads channel i
        k = w[0].numel() // len(s)
        rows = w.reshape(w.shape[0], len(s), k) / s.view(1, -1, 1)
        rows = rows.reshape(w.shape[0], -1)
        taps_power = (k * s ** 2 * power).sum()
    act = step_a ** 2 * rows.pow(2).sum(dim=1)
    step_w = rows.abs().amax(dim=1) / (2 ** (w_bits - 1) - 1)
    return float((act + step_w ** 2 * taps_power).sum())


def equalize(gm: fx.GraphModule, calib: torch.Tensor, w_bits: int, a_bits: int,
             edge: frozenset[str] = frozenset()) -> dict[tuple[str, str], torch.Tensor]:
    """Equalize `gm` (folded, float) in place on `calib`, each pair at the strength in STRENGTHS that its second
    layer's predicted rounding noise favours at these bit widths (layers in `edge` at 8 bits); returns the
    scales, to redo it on another copy."""
    pairs = find_pairs(gm)
    ranges = channel_ranges(gm, [second for _, second in pairs], calib)
    scales = {}
    for first, second in pairs:
        top, power = ranges[second]
        layer = gm.get_submodule(second)
        bits = (8, 8) if second in edge else (w_bits, a_bits)
        candidates = [scales_for(top, strength) for strength in STRENGTHS]
        noise = [predicted_noise(layer, top, power, s, *bits) for s in candidates]
        scales[(first, second)] = candidates[min(range(len(noise)), key=noise.__getitem__)]
    apply_scales(gm, scales)
    return scales
