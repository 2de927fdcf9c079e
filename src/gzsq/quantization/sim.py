"""The simulation model: the folded network with fake-quantizers in place (docs/how-it-works.md §3).

`quantize(model, calib, config)` folds BN, traces the graph, quantizes every
Conv2d/Linear weight, and inserts an activation quantizer on every tensor that a
real integer runtime would hold in low precision: the network input, the input of
every Conv2d/Linear, and every residual-add output (after the ReLU that alone reads
it, where there is one: runtimes fuse add+ReLU). A tensor read by several
layers gets one quantizer (as in an int8 runtime, it is stored once). The ranges
come from running the calibration images through the float network.

`print(sim)` lists the quantizers; `sim.encodings()` is the inspectable dict.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import interrupt
from ..config import QuantConfig
from ..errors import UnsupportedModelError
from ..fold import fold_bn
from ..graph_ops import ADD_FUNCS, RELU_FUNCS, RELU_MODULES, is_relu, is_residual_add
from ..models.validate import check_finite, check_weight_layers
from . import primitives as P
from .observers import RangeCollector, get_observer

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


class ActQuantizer(nn.Module):
    """Asymmetric per-tensor fake-quantizer; observes while `collector` is set."""

    def __init__(self, bits: int, role: str):
        super().__init__()
        self.bits, self.role = bits, role
        self.collector: RangeCollector | None = None
        self.lo = self.hi = None
        self.scale, self.zero_point = 1.0, 0

    def set_range(self, lo: float, hi: float) -> None:
        self.lo, self.hi = float(lo), float(hi)
        self.scale, self.zero_point = P.act_qparams(lo, hi, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collector is not None:
            self.collector.update(x)
            return x
        if self.lo is None:
            raise RuntimeError("activation quantizer used before calibration")
        return P.fake_quant_act_fast(x, self.scale, self.zero_point, self.bits)

    def extra_repr(self) -> str:
        if self.lo is None:
            return f"bits={self.bits}, role={self.role}, uncalibrated"
        return (f"bits={self.bits}, role={self.role}, range=[{self.lo:.4g}, {self.hi:.4g}], "
                f"scale={self.scale:.4g}, zero_point={self.zero_point}")




def _fused_activation(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The node whose value an int8 runtime stores for `node`: a ReLU that alone reads it
    is fused into it (add+ReLU is one integer kernel), so the quantizer goes after it."""
    if len(node.users) != 1:
        return node
    (user,) = node.users
    if user.op == "call_function" and user.target in RELU_FUNCS:
        return user
    if user.op == "call_module" and isinstance(gm.get_submodule(user.target), RELU_MODULES):
        return user
    return node


# Ops whose output an int8 runtime stores on a grid of its own (calibrated): adds and average pools.
# Data movement (slice, pad, flatten, max-pool, concat) reuses its input's grid, so needs no quantizer.
_REQUANTIZING_FUNCS = {F.adaptive_avg_pool2d, F.avg_pool2d, torch.mean}
_REQUANTIZING_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


def _stored_tensors(gm: fx.GraphModule) -> list[fx.Node]:
    """Every activation an int8 runtime (ONNX Runtime QDQ) requantizes, after the ReLU fused into it.

    Measured against ONNX Runtime's QDQ graphs: it quantizes every Conv/Gemm output (but gzsq's
    export keeps the logits float), add and average-pool output, and gives slices, pads and
    flattens their input's scale and zero point unchanged."""
    modules = dict(gm.named_modules())
    fused_relus = {_fused_activation(gm, n) for n in gm.graph.nodes if n.op != "output"}
    out = []
    for node in gm.graph.nodes:
        if any(user.op == "output" for user in node.users):
            continue  # the logits stay float (export/onnx_int8.py: int8 logits flip a 1000-way top-1)
        is_module = node.op == "call_module"
        requantizes = ((is_module and isinstance(modules[node.target], WEIGHT_LAYERS + _REQUANTIZING_MODULES))
                       or (node.op == "call_function" and node.target in _REQUANTIZING_FUNCS | ADD_FUNCS)
                       or (node.op == "call_method" and node.target == "mean"))
        if requantizes or (is_relu(node, modules) and node not in fused_relus):
            out.append(_fused_activation(gm, node))
    return out


def weight_layer_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], WEIGHT_LAYERS)]


class SimModel(nn.Module):
    """A quantized-simulation model: call it like the float one."""

    def __init__(self, graph_module: fx.GraphModule, config: QuantConfig, weight_scales: dict):
        super().__init__()
        self.net = graph_module
        self.config = config
        self.weight_scales = weight_scales
        self.bias_scales: dict[str, torch.Tensor] = {}  # set by `with_integer_biases`
        self.input_spec = getattr(graph_module, "input_spec", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def act_quantizers(self) -> dict[str, ActQuantizer]:
        return {n: m for n, m in self.net.named_modules() if isinstance(m, ActQuantizer)}

    def encodings(self) -> dict:
        """Every quantizer's parameters, as plain numbers (for reports and exporters)."""
        acts = {n: {"bits": q.bits, "role": q.role, "min": q.lo, "max": q.hi,
                    "scale": q.scale, "zero_point": q.zero_point} for n, q in self.act_quantizers().items()}
        weights = {n: {"bits": b, "scale": s.tolist()} for n, (b, s) in self.weight_scales.items()}
        biases = {n: {"bits": 32, "scale": s.tolist()} for n, s in self.bias_scales.items()}
        return {"config": self.config.to_dict(), "activations": acts, "weights": weights, "biases": biases}


def _insert_act_quantizers(gm: fx.GraphModule, config: QuantConfig) -> None:
    layers = weight_layer_nodes(gm)
    if not layers:
        raise UnsupportedModelError("the model has no Conv2d or Linear layer to quantize")
    edge = {layers[0], layers[-1]} if config.first_last_8bit else set()
    targets: dict[fx.Node, tuple[int, str]] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            targets[node] = (config.input_bits, "input")
    for node in layers:
        src = node.args[0]
        bits = 8 if node in edge else config.a_bits
        if src not in targets:
            targets[src] = (bits, "layer-input")
        elif node in edge:
            targets[src] = (max(targets[src][0], bits), targets[src][1])
    for node in gm.graph.nodes:
        if is_residual_add(node):
            out = _fused_activation(gm, node)
            if out not in targets:
                targets[out] = (config.a_bits, "residual-add")
    if config.placement == "runtime":
        for node in _stored_tensors(gm):
            if node not in targets:
                targets[node] = (8 if node in edge else config.a_bits, "stored")
    for i, (node, (bits, role)) in enumerate(targets.items()):
        name = f"act_quant_{i}"
        gm.add_submodule(name, ActQuantizer(bits, role))
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
    gm.graph.lint()
    gm.recompile()


@torch.no_grad()
def _quantize_weights(gm: fx.GraphModule, config: QuantConfig) -> dict:
    layers = weight_layer_nodes(gm)
    edge = {layers[0].target, layers[-1].target} if config.first_last_8bit else set()
    scales = {}
    for node in layers:
        layer = gm.get_submodule(node.target)
        bits = 8 if node.target in edge else config.w_bits
        if config.weight_clip == "mse":
            scale = P.mse_weight_scale(layer.weight, bits, config.per_channel_weights)
        else:
            scale = P.weight_scale(layer.weight, bits, config.per_channel_weights)
        # one input channel per group, one output each: ONNX Runtime's depthwise kernel, which widens to 32 bits
        depthwise = isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.weight.shape[1] == 1 \
            and layer.weight.shape[0] == layer.groups
        if bits == 8 and config.pair_safe_8bit and not depthwise:
            scale = P.pair_safe_scale(layer.weight, scale)
        layer.weight.copy_(P.fake_quant_weight(layer.weight, scale, bits))
        scales[node.target] = (bits, scale)
    return scales


@torch.no_grad()
def quantize(model: nn.Module, calib: torch.Tensor, config: QuantConfig | None = None, *,
             batch_size: int = 128, progress: bool = False) -> SimModel:
    """Fold, insert quantizers, calibrate activation ranges on `calib`, quantize weights."""
    config = config or QuantConfig()
    if not isinstance(calib, torch.Tensor) or calib.dim() != 4 or len(calib) == 0:
        raise UnsupportedModelError("calibration data must be a non-empty N×C×H×W tensor")
    if not torch.isfinite(calib).all():
        raise UnsupportedModelError("calibration data hold NaN/Inf")
    check_weight_layers(model)
    check_finite(model)
    spec = getattr(model, "input_spec", None)
    if spec is not None and tuple(calib.shape[1:]) != spec.shape:
        raise UnsupportedModelError(f"calibration images are {'×'.join(map(str, calib.shape[1:]))} but the model "
                                    f"takes {'×'.join(map(str, spec.shape))}")
    gm = fold_bn(model)
    _insert_act_quantizers(gm, config)
    quantizers = [m for m in gm.modules() if isinstance(m, ActQuantizer)]
    for i, q in enumerate(quantizers):
        q.collector = RangeCollector(seed=i)
    gm.eval()
    for start in tqdm(range(0, len(calib), batch_size), desc="calibrate", disable=not progress, leave=False):
        interrupt.check("sim-calibration")
        gm(calib[start:start + batch_size])
    observer = get_observer(config.observer)
    for q in quantizers:
        if q.role == "input" and spec is not None:
            # The valid pixel range is known without data: 8-bit pixels map onto the grid almost
            # exactly, and no calibration source (noise, distilled) can widen or clip it.
            q.set_range(*spec.input_range())
        else:
            q.set_range(*observer(q.collector, q.bits))
        q.collector = None
    scales = _quantize_weights(gm, config)
    return SimModel(gm, config, scales)


@torch.no_grad()
def with_integer_biases(sim: SimModel) -> SimModel:
    """A copy of `sim` whose Conv/Linear biases lie on the int32 grid of (input scale × weight scale).

    That is how an integer runtime stores a bias, and what ONNX Runtime makes of a float bias when
    it loads a QDQ file: rounding it here, in float32 as ONNX Runtime does, keeps the simulator and
    the exported file computing the same numbers. Layers whose input has no quantizer keep theirs.
    """
    result = copy.deepcopy(sim)
    modules = dict(result.net.named_modules())
    for node in weight_layer_nodes(result.net):
        layer, src = modules[node.target], node.args[0]
        if layer.bias is None or node.target not in result.weight_scales:
            continue
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules[src.target], ActQuantizer)):
            continue
        _, w_scale = result.weight_scales[node.target]
        scale = (torch.tensor(modules[src.target].scale, dtype=torch.float32) * w_scale.float()).expand(layer.bias.shape)
        layer.bias.copy_(torch.round(layer.bias / scale) * scale)
        result.bias_scales[node.target] = scale.clone()
    return result
