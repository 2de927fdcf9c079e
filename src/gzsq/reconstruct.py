"""Reconstruction: learn weight rounding and activation step sizes against the float model (docs/how-it-works.md §3).

Round-to-nearest is the best rounding for each weight alone, not for a layer's output. Here the
rounding of every weight (AdaRound: Nagel et al., 2020) and every activation quantizer's step size
(LSQ: Esser et al., 2020) are learned on calibration images so that a *unit* of the quantized
network reproduces the float unit's output (squared error summed over channels; in a unit that holds a
residual add each channel's error is first divided by its variance over the calibration images, as
distilled images excite the residual stream's channels unevenly: `ReconstructConfig.loss`):

- `method="block"` (BRECQ: Li et al., 2021): a unit is a stretch of the graph between two points
  where a single tensor is alive — a residual block of a ResNet, or a conv with its activation
  where the network has no blocks — ending with its output quantizer.
- `method="adaround"`: a unit is one Conv2d/Linear (with the ReLU that alone reads it, if any) and
  the quantizer of its input.

Units are reconstructed in graph order; each one's input comes from the quantized network whose
earlier units are already learned and hard-rounded, and, QDrop-style (Wei et al., 2022), every
element of the unit's input and of each quantized activation inside it is replaced at random by
its float counterpart with probability `drop_prob` during training.

The weight scale is the round-to-nearest quantizer's and is kept (a learned gain on it lost on gzsq's
images: results/lowbit/what_limits_reconstruction.md §3); activation zero points are kept and only the
step size moves. The result is a new `SimModel` whose weights are the hard-rounded learned integers
times their scales, whose `weight_scales` and `ActQuantizer`s hold the scales, so that
`SimModel.encodings()` and every exporter read exactly the learned encodings.

    from gzsq.reconstruct import reconstruct, ReconstructConfig
    sim = quantize(model, calib, QuantConfig(w_bits=4, a_bits=4, observer="mse", weight_clip="mse"))
    sim = reconstruct(model, sim, calib, ReconstructConfig(), progress=True)

Measured (results/reconstruct.md, `experiments/reconstruct_sweep.py`): on CIFAR ResNet-20 with gzsq's
distilled images, W4A4 goes from 70.9 (round-to-nearest, MSE-clipped start) to 77.3 (FP32 81.0) and
W4A8 from 75.5 to 80.5 with the defaults, ~3 min on one CPU thread; at W8A8 it gains nothing. Start
from MSE-clipped ranges below 8 bits: min/max ranges leave the step sizes too far to move.

Large images (`ReconstructConfig.for_images`): above 64×64 pixels a step draws 8 images instead of 32,
the rounding variables learn at 1e-2 instead of 1e-3 (the windows below make the gradients noisy),
and a unit made of local ops only (convs, pads, pools, activations, adds) whose input map is wider than
16 learns on one random 16×16 window of it per step, its corner on the unit's stride grid, the float
target computed by the float unit on the same window (zero padding at the window's borders is then the
same on both sides). A unit with a global op (global pooling, squeeze-and-excitation, flatten, linear)
keeps the full map. Maps of CIFAR size train on full maps with 32 images a step, as before. The
activation quantizers' forward and backward (QDrop mixing included) are one autograd function.

Measured on 224×224 models (results/lowbit/imagenet.md, `experiments/lowbit_imagenet.py`; 3 seeds, one
thread, 500-image ImageNet sample): the whole `gzsq quantize --w-bits 4 --a-bits 8` job takes 412 ± 13 s on
EfficientNet-Lite0 and 313 ± 9 s on MobileNetV2 (60 / 55 s with round to nearest), where Lite0's first
unit alone ran at 2 s per step on full maps. Top-1 goes from 14.0 to 47.4 (FP32 88.8) and from 29.8 to
55.1 (FP32 83.4): out of round to nearest's collapse, far from FP32.

Memory: every unit's float and quantized inputs and float outputs are held for all calibration
images (CIFAR: a few MB; 64 images at 224×224: four 64×96×113×113 float tensors, 1.3 GB, at
EfficientNet-Lite0's widest unit).
"""

from __future__ import annotations

import copy
import math
import operator
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import device, distributed, interrupt
from .config import ReconstructConfig
from .errors import UnsupportedModelError
from .fold import fold_bn
from .graph_ops import is_relu, is_residual_add
from .quantization.sim import WEIGHT_LAYERS, ActQuantizer, SimModel

# AdaRound's rectified sigmoid h(V) = clamp(σ(V)(ζ − γ) + γ, 0, 1) and the regulariser's
# exponent β, annealed from 20 to 2 after the warm-up (the paper's values).
_ZETA, _GAMMA = 1.1, -0.1
_BETA_START, _BETA_END = 20.0, 2.0


class _State:
    """What every wrapped module of one reconstruction reads: the mode and the drop RNG."""

    def __init__(self, generator: torch.Generator, drop_prob: float):
        self.mode = "hard"  # "float": the folded FP32 network; "soft": training; "hard": quantized
        self.drop = False  # QDrop mixing on (training only)
        self.drop_prob = drop_prob
        self.generator = generator
        self.batch: int | None = None  # the whole batch's size under torchrun (this rank holds `rows` of it)
        self.rows = slice(None)
        self.mask_generator: torch.Generator | None = None  # see reseed_masks

    def reseed_masks(self, device: torch.device) -> None:
        """The masks are as large as the activations: drawn on the CPU and copied over, they took most
        of a GPU's step. Off the CPU they are drawn on the device, from a seed the CPU generator gives
        each unit, so a run (and a resumed one) stays determined by its seed. The CPU draws as before."""
        if device.type != "cpu":
            if self.mask_generator is None:
                self.mask_generator = torch.Generator(device=device)
            self.mask_generator.manual_seed(int(torch.randint(2 ** 62, (1,), generator=self.generator)))

    def keep_mask(self, fp: torch.Tensor) -> torch.Tensor:
        """Which elements stay float. Under torchrun every rank draws the whole batch's mask and keeps
        its rows: the same draws as one process, and the generators stay in step."""
        shape = fp.shape if self.batch is None else (self.batch,) + tuple(fp.shape[1:])
        g = self.mask_generator or self.generator
        return (torch.rand(shape, generator=g, device=g.device) < self.drop_prob)[self.rows].to(fp.device)

    def mix(self, quantized: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
        return torch.where(self.keep_mask(fp), fp, quantized)


class _RoundedLayer(nn.Module):
    """A Conv2d/Linear whose weight is s · clamp(⌊w/s⌋ + rounding, ±qmax); the rounding is learned."""

    def __init__(self, layer: nn.Module, w_float: torch.Tensor, scale: torch.Tensor, bits: int, state: _State):
        super().__init__()
        self.layer, self.state, self.qmax = layer, state, 2 ** (bits - 1) - 1
        s = scale.reshape((-1,) + (1,) * (w_float.dim() - 1)) if scale.dim() else scale
        self.register_buffer("w_float", w_float.detach().clone())
        self.register_buffer("s", s.detach().clone())
        self.register_buffer("w_rtn", layer.weight.detach().clone())  # the round-to-nearest weight in the sim
        ratio = self.w_float / self.s
        self.register_buffer("w_floor", torch.floor(ratio))
        rest = (ratio - self.w_floor).clamp(0.0, 1.0)
        p = ((rest - _GAMMA) / (_ZETA - _GAMMA)).clamp(1e-6, 1 - 1e-6)  # h(V) = rest at the start
        self.v = nn.Parameter(torch.log(p / (1 - p)))
        self.learned = False

    def h(self) -> torch.Tensor:
        return (torch.sigmoid(self.v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)

    def hard_weight(self) -> torch.Tensor:
        q = torch.clamp(self.w_floor + (self.v >= 0).to(self.w_floor.dtype), -self.qmax, self.qmax)
        return q * self.s

    def weight(self) -> torch.Tensor:
        mode = self.state.mode
        if mode == "float":
            return self.w_float
        if mode == "soft":
            return torch.clamp(self.w_floor + self.h(), -self.qmax, self.qmax) * self.s
        return self.hard_weight() if self.learned else self.w_rtn

    def regulariser(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, layer = self.weight(), self.layer
        if isinstance(layer, nn.Conv2d):
            return layer._conv_forward(x, w, layer.bias)
        return F.linear(x, w, layer.bias)


class _FakeQuant(torch.autograd.Function):
    """LSQ fake quantization, QDrop mixing included, in few passes over the tensor:
    y = x where `keep`, else (clamp(round(x/s) + z, 0, qmax) − z)·s, with the straight-through gradients
    ∂y/∂x = 1 where kept or not clamped, ∂y/∂s = q − x/s where not clamped, q where clamped (q = y/s)."""

    @staticmethod
    def forward(ctx, x, s, zero_point: float, qmax: int, keep):
        xs = x / s
        r = torch.round(xs)
        q = torch.clamp(r + zero_point, 0, qmax) - zero_point
        inside = q == r
        y = q * s
        d_s = torch.where(inside, q - xs, q)
        if keep is not None:
            y = torch.where(keep, x, y)
            d_s.masked_fill_(keep, 0.0)
            inside |= keep
        ctx.save_for_backward(inside, d_s)
        return y

    @staticmethod
    def backward(ctx, grad):
        inside, d_s = ctx.saved_tensors
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = (grad * d_s).sum().reshape(()) if ctx.needs_input_grad[1] else None
        return grad_x, grad_s, None, None, None


class _LearnedActQuant(nn.Module):
    """An ActQuantizer with a learnable step size (LSQ, parametrized as its log), zero point fixed."""

    def __init__(self, q: ActQuantizer, state: _State, learnable: bool):
        super().__init__()
        self.q, self.state, self.qmax = q, state, 2 ** q.bits - 1
        self.zero_point = q.zero_point
        self.log_scale = nn.Parameter(torch.tensor(math.log(q.scale)), requires_grad=learnable)
        self.log_start = math.log(q.scale)  # the calibrated step size, which act_scale_floor bounds from below
        self.learnable = learnable
        self.learned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.state.mode
        if mode == "float":
            return x
        keep = self.state.keep_mask(x) if mode == "soft" and self.state.drop else None
        return _FakeQuant.apply(x, self.log_scale.exp(), float(self.zero_point), self.qmax, keep)

    @torch.no_grad()
    def write_back(self) -> None:
        """Put the learned step size into the ActQuantizer (scale, zero point and the range they cover)."""
        scale = float(self.log_scale.exp())
        self.q.lo, self.q.hi = -self.zero_point * scale, (self.qmax - self.zero_point) * scale
        self.q.scale, self.q.zero_point = scale, self.zero_point


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Unit:
    name: str
    input: fx.Node  # the one tensor the unit reads
    nodes: list[fx.Node]  # in graph order; the last one is the unit's output


# The most weight layers one merged chain holds: an inverted-residual block's expand, depthwise and project.
_MAX_CHAIN_LAYERS = 3


def _block_units(graph: fx.Graph, is_weight, modules: dict | None = None, merge_chains: bool = False) -> list[_Unit]:
    """Cut the graph where exactly one value is alive; every unit holds at least one weight layer.

    A skip-less inverted-residual block (stride 2, or a width change) is thus one unit per conv. With
    `merge_chains` (needs `modules`) it is one unit: a piece whose conv ends in an activation joins the next,
    up to one whose conv output is its output (the linear projection), at most `_MAX_CHAIN_LAYERS` layers,
    never across a residual add or a global op. Off by default: at W4A8 it lost 9.7 top-1 points on
    EfficientNet-Lite0 and 4.3 on MobileNetV2 (3 seeds, results/lowbit/imagenet_block_units.md). ResNet and
    VGG units are the same either way.
    """
    nodes = [n for n in graph.nodes if n.op not in ("output", "get_attr")]
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position.get(u, len(nodes)) for u in n.users), default=position[n]) for n in nodes}
    pieces, start = [], None
    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            continue
        if start is None:
            start = i
        alive = sum(1 for n in nodes[:i + 1] if last_use[n] > i)
        if alive == 1:
            pieces.append(nodes[start:i + 1])
            start = None
    if start is not None:
        pieces.append(nodes[start:])
    merged: list[list[fx.Node]] = []
    pending: list[fx.Node] = []  # weightless pieces before the first weight layer join the next unit
    for piece in pieces:
        if any(is_weight(n) for n in piece):
            merged.append(pending + piece)
            pending = []
        elif merged:
            merged[-1].extend(piece)  # an output quantizer (or pooling) joins the unit that feeds it
        else:
            pending.extend(piece)
    if merge_chains:
        merged = _merge_chains(merged, is_weight, modules)
    units = []
    for piece in merged:
        inputs = {a for n in piece for a in n.all_input_nodes if a not in piece and a.op != "get_attr"}
        if len(inputs) != 1:
            raise UnsupportedModelError(f"cannot cut the graph into single-input blocks at {piece[0].name}")
        name = next(n for n in piece if is_weight(n)).target
        units.append(_Unit(str(name), inputs.pop(), piece))
    return units


def _chain_kind(piece: list[fx.Node], is_weight, modules: dict) -> str:
    """"open": one weight layer, then an activation (local ops on a single path); "linear": one weight layer
    whose output is the piece's output, past quantizers only (a linear bottleneck); else "other" (a residual
    add, several weight layers, a global op)."""
    inside = set(piece)
    weights = [i for i, n in enumerate(piece) if is_weight(n)]
    if len(weights) != 1:
        return "other"
    for n in piece:  # a single path: no node reads two values of the piece (no residual add)
        if sum(1 for a in n.all_input_nodes if a in inside) > 1:
            return "other"
    tail = piece[weights[0] + 1:]
    passive = (ActQuantizer, _LearnedActQuant, nn.Identity, nn.Dropout)
    if all(n.op == "call_module" and isinstance(modules.get(n.target), passive) for n in tail):
        return "linear"
    inputs = {a for n in piece for a in n.all_input_nodes if a not in inside and a.op != "get_attr"}
    if len(inputs) != 1 or _unit_stride(_Unit("", inputs.pop(), piece), modules) is None:
        return "other"  # a global op (pooling, flatten, linear) ends the chain where it is
    return "open"


def _merge_chains(pieces: list[list[fx.Node]], is_weight, modules: dict) -> list[list[fx.Node]]:
    """Join each run of open pieces to the linear piece that ends it (its last `_MAX_CHAIN_LAYERS` − 1 open
    pieces); open pieces not followed by a linear piece stay as they are."""
    out: list[list[fx.Node]] = []
    run: list[list[fx.Node]] = []
    for piece in pieces:
        kind = _chain_kind(piece, is_weight, modules)
        if kind == "open":
            run.append(piece)
            continue
        joined = run[len(run) - (_MAX_CHAIN_LAYERS - 1):] if kind == "linear" else []
        out.extend(run[:len(run) - len(joined)])
        out.append([n for p in joined for n in p] + piece)
        run = []
    out.extend(run)
    return out


def _layer_units(graph: fx.Graph, is_weight, is_act, modules: dict) -> list[_Unit]:
    """One unit per weight layer: its input quantizer (if any), the layer, and a ReLU that alone reads it."""
    units = []
    for node in graph.nodes:
        if not is_weight(node):
            continue
        src = node.args[0]
        piece, inp = [node], src
        if isinstance(src, fx.Node) and is_act(src):
            piece, inp = [src, node], src.args[0]
        if len(node.users) == 1:
            (user,) = node.users
            if is_relu(user, modules):
                piece.append(user)
        units.append(_Unit(str(node.target), inp, piece))
    return units


# Ops that compute each output position from a bounded neighbourhood of input positions: a unit made of
# these alone can be trained on a window of its input map (anything else, e.g. a global pool, a flatten,
# a linear layer or an unknown op, keeps the full map).
_LOCAL_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.LeakyReLU, nn.Identity,
                  nn.Dropout, nn.BatchNorm2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.MaxPool2d, nn.AvgPool2d)
_LOCAL_FUNCTIONS = {operator.add, operator.iadd, operator.mul, torch.add, torch.mul, torch.relu, torch.clamp,
                    F.relu, F.relu6, F.hardtanh, F.silu, F.hardswish, F.leaky_relu, torch.sigmoid, F.max_pool2d,
                    F.avg_pool2d}
_LOCAL_METHODS = {"add", "add_", "mul", "mul_", "relu", "relu_", "clamp", "clamp_", "contiguous"}


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _unit_stride(unit: _Unit, modules: dict) -> tuple[int, int] | None:
    """The unit's input-to-output stride (rows, columns) if it is made of local ops alone, else None."""
    stride: dict[fx.Node, tuple[int, int]] = {unit.input: (1, 1)}
    for node in unit.nodes:
        own = (1, 1)
        if node.op == "call_module":
            m = modules[node.target]
            m = m.layer if isinstance(m, _RoundedLayer) else m
            if isinstance(m, nn.Conv2d):
                own = _pair(m.stride)
            elif isinstance(m, (_LearnedActQuant, ActQuantizer)):
                pass
            elif isinstance(m, _LOCAL_MODULES):
                if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                    if getattr(m, "ceil_mode", False) or _pair(getattr(m, "dilation", 1)) != (1, 1):
                        return None
                    own = _pair(m.stride if m.stride is not None else m.kernel_size)
            else:
                return None
        elif node.op == "call_function":
            if node.target not in _LOCAL_FUNCTIONS:
                return None
            if node.target in (F.max_pool2d, F.avg_pool2d):
                return None  # their strides sit in the arguments: keep it simple, use the full map
        elif node.op == "call_method":
            if node.target not in _LOCAL_METHODS:
                return None
        elif node.op != "get_attr":
            return None
        inner = [stride[a] for a in node.all_input_nodes if a in stride]
        if not inner:
            return None
        base = max(inner)
        if any(s != base for s in inner):  # branches that disagree: not a simple window
            return None
        stride[node] = (base[0] * own[0], base[1] * own[1])
    return stride.get(unit.nodes[-1])


def _window(height: int, width: int, crop: int, stride: tuple[int, int], generator: torch.Generator):
    """A random crop×crop window (top, left) whose corner sits on the unit's stride grid."""
    corner = []
    for size, s in zip((height, width), stride):
        side = min(crop, size)
        corner.append(int(torch.randint((size - side) // s + 1, (1,), generator=generator)) * s)
    return slice(corner[0], corner[0] + min(crop, height)), slice(corner[1], corner[1] + min(crop, width))


def _unit_module(root: dict, unit: _Unit) -> fx.GraphModule:
    graph = fx.Graph()
    env = {unit.input: graph.placeholder("x")}
    for node in unit.nodes:
        for arg in node.all_input_nodes:
            if arg not in env and arg.op == "get_attr":
                env[arg] = graph.node_copy(arg, lambda a: env[a])
        env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(env[unit.nodes[-1]])
    return fx.GraphModule(root, graph)


class _StopAt(Exception):
    def __init__(self, value):
        self.value = value


class _RunUntil(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, stop: fx.Node):
        super().__init__(gm, garbage_collect_values=True)
        self.stop = stop

    def run_node(self, n: fx.Node):
        value = super().run_node(n)
        if n is self.stop:
            raise _StopAt(value)
        return value


@torch.no_grad()
def _capture(gm: fx.GraphModule, node: fx.Node, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """The value of `node` for every image, running the graph only as far as it."""
    if node.op == "placeholder":
        return images.clone()
    out = []
    for start in range(0, len(images), batch):
        try:
            _RunUntil(gm, node).run(images[start:start + batch])
        except _StopAt as hit:
            out.append(hit.value)
    return torch.cat(out)


@torch.no_grad()
def _run(module: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    return torch.cat([module(x[i:i + batch]) for i in range(0, len(x), batch)])


def _reconstruction_error(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error summed over channels (dim 1), each channel's times `weights` if given, averaged over
    images and positions."""
    err = (out - target).pow(2)
    if weights is not None:
        err = err * weights.reshape((1, -1) + (1,) * (err.dim() - 2))
    return err.sum(1).mean()


def _has_residual_add(unit: _Unit) -> bool:
    """Whether the unit holds a residual add (its output is then a residual stream), as the simulator counts
    one (it gives such adds their own quantizer)."""
    return any(is_residual_add(n) for n in unit.nodes)


def _channel_weights(target: torch.Tensor, loss: str, floor: float = 0.01) -> torch.Tensor | None:
    """Per-channel loss weights for `loss`: None for plain MSE; for "channel-normalized" the inverse of each
    channel's variance over the calibration outputs plus `floor` × the mean variance (so a channel the
    images leave constant cannot dominate; a large floor tends to plain MSE), scaled so that the weighted
    variances sum as the plain ones do and the rounding regulariser keeps its balance with the error."""
    if loss == "mse" or target.dim() < 2:
        return None
    dims = [d for d in range(target.dim()) if d != 1]
    var = target.double().var(dim=dims, unbiased=False)
    weights = 1.0 / (var + floor * var.mean().clamp_min(1e-12))
    return (weights * var.sum().clamp_min(1e-12) / (weights * var).sum().clamp_min(1e-12)).float()


_PROGRESS_FORMAT = "gzsq-reconstruct-progress/3"


def _progress_state(finished: list[_Unit], total: int, weights: dict, acts: dict, generator: torch.Generator,
                    log: list) -> dict:
    """What resuming after these units needs: their hard roundings (one bool per weight: round up?) and
    learned step sizes, the draws' RNG state, and the log. Plain values and tensors only."""
    return {"format": _PROGRESS_FORMAT, "units": [u.name for u in finished], "total_units": total,
            "round_up": {n: (w.v.detach() >= 0).cpu() for n, w in weights.items() if w.learned},
            "log_scale": {n: float(a.log_scale.detach()) for n, a in acts.items() if a.learned},
            "generator": generator.get_state(), "log": [dict(entry) for entry in log]}


def _restore(progress: dict, units: list[_Unit], weights: dict, acts: dict, generator: torch.Generator):
    """Put a `_progress_state` back into the wrappers → (units done, log). Refused in one line when it
    does not belong to this reconstruction (other units, layers or shapes)."""
    def refuse():
        return UnsupportedModelError("the saved reconstruction progress does not belong to this model and "
                                     "settings; start over")
    try:
        names, round_up, log_scale = progress["units"], progress["round_up"], progress["log_scale"]
        ok = (progress.get("format") == _PROGRESS_FORMAT and isinstance(names, list) and len(names) <= len(units)
              and progress.get("total_units") == len(units)
              and names == [u.name for u in units[:len(names)]]
              and set(round_up) <= set(weights) and set(log_scale) <= set(acts)
              and all(isinstance(t, torch.Tensor) and t.dtype == torch.bool and t.shape == weights[n].v.shape
                      for n, t in round_up.items())
              and all(isinstance(v, float) and math.isfinite(v) for v in log_scale.values())
              and isinstance(progress["log"], list) and len(progress["log"]) == len(names))
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise refuse()
    try:
        generator.set_state(progress["generator"])
    except (RuntimeError, TypeError):
        raise refuse() from None
    with torch.no_grad():
        for n, up in round_up.items():
            w = weights[n]
            w.v.copy_(torch.where(up.to(w.v.device), 1.0, -1.0).to(w.v.dtype))  # only the sign is read now
            w.learned = True
        for n, value in log_scale.items():
            acts[n].log_scale.fill_(value)
            acts[n].learned = True
    return len(names), [dict(entry) for entry in progress["log"]]


def reconstruct(model: nn.Module, sim: SimModel, calib: torch.Tensor, config: ReconstructConfig | None = None, *,
                seed: int = 0, progress: bool = False, resume: dict | None = None,
                on_unit: Callable[[dict], None] | None = None) -> SimModel:
    """Learn rounding and activation step sizes of `sim` (made by `quantize(model, ...)`) on `calib`.

    `model` is the FP32 model `sim` was made from (BatchNorm folded or not: it is folded here).
    Returns a new SimModel; `sim` is left as it was. Deterministic for a seed at a fixed thread count.
    `result.reconstruction` records the settings, seconds and each unit's final loss.

    Interruptible between units: after each unit `on_unit(progress)` receives a small dict of plain
    values and tensors (the units done, their hard roundings and step sizes, the RNG state); passing
    it back as `resume` (same model, sim, calib, config and seed) skips those units and gives the
    very result of an uninterrupted run.
    """
    config = config or ReconstructConfig()
    progress = progress and distributed.is_main()
    if not isinstance(sim, SimModel):
        raise UnsupportedModelError("reconstruct needs the SimModel that gzsq.quantization.sim.quantize returned")
    if not isinstance(calib, torch.Tensor) or calib.dim() != 4 or len(calib) == 0:
        raise UnsupportedModelError("calibration data must be a non-empty N×C×H×W tensor")
    if not torch.isfinite(calib).all():
        raise UnsupportedModelError("calibration data hold NaN/Inf")
    t0 = time.perf_counter()
    calib = calib.detach().float()
    config = config.for_images(calib.shape[2], calib.shape[3])  # batch size and crop by image size
    result = copy.deepcopy(sim)
    result.eval()
    gm = result.net
    float_gm = fold_bn(model)
    generator = torch.Generator().manual_seed(seed)
    state = _State(generator, config.drop_prob)

    # A working copy of the graph whose weight layers and quantizers are the learnable wrappers.
    sim_modules = dict(gm.named_modules())
    root: dict[str, object] = {}
    weights: dict[str, _RoundedLayer] = {}
    acts: dict[str, _LearnedActQuant] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            root[node.target] = _fetch(gm, node.target)
        if node.op != "call_module":
            continue
        module = sim_modules[node.target]
        if isinstance(module, WEIGHT_LAYERS) and node.target in sim.weight_scales:
            try:
                w_float = float_gm.get_submodule(node.target).weight
            except AttributeError:
                raise UnsupportedModelError(f"the model has no layer {node.target!r}: the SimModel was not made "
                                            "from this model") from None
            if w_float.shape != module.weight.shape:
                raise UnsupportedModelError(f"layer {node.target!r} differs between the model and the SimModel")
            bits, scale = sim.weight_scales[node.target]
            weights[node.target] = root[node.target] = _RoundedLayer(module, w_float, scale, bits, state)
        elif isinstance(module, ActQuantizer):
            learnable = config.act_lr > 0 and module.role != "input"  # the pixel grid is known exactly
            acts[node.target] = root[node.target] = _LearnedActQuant(module, state, learnable)
        else:
            root[node.target] = module
    work = fx.GraphModule(root, copy.deepcopy(gm.graph))
    dev = device.current()  # the units and their tensors go there; random draws stay on the CPU
    if dev.type != "cpu":
        work.to(dev)
        calib = calib.to(dev)
    work_modules = dict(work.named_modules())
    wrapped = lambda n, kind: n.op == "call_module" and isinstance(work_modules.get(n.target), kind)  # noqa: E731
    is_weight = lambda n: wrapped(n, _RoundedLayer)  # noqa: E731
    is_act = lambda n: wrapped(n, _LearnedActQuant)  # noqa: E731
    if config.method == "block":
        units = _block_units(work.graph, is_weight, work_modules)
    else:
        units = _layer_units(work.graph, is_weight, is_act, work_modules)

    log, done = [], 0
    if resume is not None:
        done, log = _restore(resume, units, weights, acts, generator)
    x_q = x_fp = None
    previous: _Unit | None = None
    out_q = target = None  # the previous unit's quantized and float outputs, once there is one
    for index, unit in enumerate(units):
        if index < done:
            continue
        module = _unit_module(root, unit)
        unit_weights = [work_modules[n.target] for n in unit.nodes if is_weight(n)]
        unit_acts = [work_modules[n.target] for n in unit.nodes if is_act(n)]
        learn_acts = [a for a in unit_acts if a.learnable and not a.learned]
        if previous is not None and unit.input is previous.nodes[-1]:
            x_q, x_fp = out_q, target  # chained blocks: the previous unit's outputs are this one's inputs
        else:
            state.mode = "hard"
            x_q = _capture(work, unit.input, calib)
            state.mode = "float"
            x_fp = _capture(work, unit.input, calib)
        state.mode = "float"
        target = _run(module, x_fp)
        loss = config.loss
        if loss == "residual-normalized":  # channel-normalized on the units that end a residual block, else mse
            loss = "channel-normalized" if _has_residual_add(unit) else "mse"
        channel_weights = _channel_weights(target, loss, config.channel_floor)
        # Local units on maps wider than config.crop learn on one random window per step (see ReconstructConfig).
        crop_stride = None
        if x_q.dim() == 4 and config.crop:
            stride, side = _unit_stride(unit, work_modules), max(x_q.shape[2:])
            if stride is not None and side > config.crop:
                crop_stride = stride

        opt_v = torch.optim.Adam([w.v for w in unit_weights], lr=config.lr)
        scales = [a.log_scale for a in learn_acts]
        opt_s = torch.optim.Adam(scales, lr=config.act_lr) if scales else None
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, config.iters, eta_min=0.0) if opt_s else None
        warm = int(config.warmup * config.iters)
        state.mode, state.drop = "soft", config.drop_prob > 0
        state.reseed_masks(dev)
        bar = tqdm(range(config.iters), desc=f"reconstruct {index + 1}/{len(units)} {unit.name}",
                   disable=not progress, leave=False)
        t_unit = time.perf_counter()
        rec = reg = torch.zeros(())
        ranks = distributed.size()
        if ranks > 1:  # data parallel: every rank draws the whole batch and keeps its share of it
            if config.batch_size < ranks:
                raise UnsupportedModelError(f"a reconstruction batch of {config.batch_size} images cannot be "
                                            f"shared by {ranks} processes")
            state.batch, state.rows = config.batch_size, distributed.shard(config.batch_size)
        learned = [w.v for w in unit_weights] + scales
        for step in bar:
            if ranks == 1:
                interrupt.check("reconstruct")
            elif distributed.any_rank(interrupt.requested("reconstruct")):  # every rank stops at the same step
                interrupt.check()
            idx = torch.randint(len(calib), (config.batch_size,), generator=generator)[state.rows]
            if crop_stride is None:
                inp, want = x_q[idx], target[idx]
                if state.drop:
                    inp = state.mix(inp, x_fp[idx])
            else:  # the float unit on the same window: zero padding at its borders is the same on both sides
                rows, cols = _window(x_q.shape[2], x_q.shape[3], config.crop, crop_stride, generator)
                inp, fp_in = x_q[idx, :, rows, cols], x_fp[idx, :, rows, cols]
                state.mode = "float"
                with torch.no_grad():
                    want = module(fp_in)
                state.mode = "soft"
                if state.drop:
                    inp = state.mix(inp, fp_in)
            rec = _reconstruction_error(module(inp), want, channel_weights)
            if ranks > 1:  # this rank's part of the whole batch's mean
                rec = rec * (len(idx) / config.batch_size)
            loss = rec
            if step >= warm and config.reg_weight > 0:
                progress_share = (step - warm) / max(1, config.iters - warm)
                beta = _BETA_END + (_BETA_START - _BETA_END) * (1 - progress_share)
                reg = sum(w.regulariser(beta) for w in unit_weights)
                loss = loss + config.reg_weight * reg / ranks  # counted once when the ranks' gradients add up
            opt_v.zero_grad(set_to_none=True)
            if opt_s:
                opt_s.zero_grad(set_to_none=True)
            loss.backward()
            if ranks > 1:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in learned]
                summed = distributed.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
                for p, g in zip(learned, summed.split([g.numel() for g in grads])):
                    p.grad = g.view_as(p)
                rec = distributed.all_reduce_sum(rec.detach().clone())
            opt_v.step()
            if opt_s:
                opt_s.step()
                sched.step()
                if config.act_scale_floor > 0:
                    with torch.no_grad():
                        for a in learn_acts:
                            a.log_scale.clamp_(min=a.log_start + math.log(config.act_scale_floor))
            if step % 10 == 0 or step == config.iters - 1:
                bar.set_postfix(loss=f"{rec.item():.4g}", reg=f"{float(reg.detach()):.4g}")
        bar.close()
        state.drop, state.batch, state.rows = False, None, slice(None)
        for w in unit_weights:
            w.learned = True
        for a in learn_acts:
            a.learned = True
        state.mode = "hard"
        out_q = _run(module, x_q)
        final = float(_reconstruction_error(out_q, target, channel_weights))
        log.append({"unit": unit.name, "layers": [str(n.target) for n in unit.nodes if is_weight(n)],
                    "seconds": round(time.perf_counter() - t_unit, 2), "final_loss": final,
                    "crop": None if crop_stride is None else min(config.crop, max(x_q.shape[2:]))})
        previous = unit
        if on_unit is not None:
            on_unit(_progress_state(units[:index + 1], len(units), weights, acts, generator, log))

    with torch.no_grad():
        for w in weights.values():
            if w.learned:
                w.layer.weight.copy_(w.hard_weight())
        for a in acts.values():
            if a.learned:
                a.write_back()
    if dev.type != "cpu":
        result.cpu()
    result.reconstruction = {"config": config.to_dict(), "seed": seed, "units": log,
                             "seconds": round(time.perf_counter() - t0, 2)}
    return result
