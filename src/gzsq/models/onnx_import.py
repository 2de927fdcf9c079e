"""ONNX classifier → PyTorch fx graph, only so that gradient-based distillation can run on it.

Why our own converter and not onnx2torch: onnx2torch imports torchvision at import
time, and PyPI's torchvision does not import beside the pinned torch 2.13 here;
more to the point, gzsq's later stages (BN folding, statistics targets, the
quantization simulator) read a graph of *standard* modules — nn.Conv2d,
nn.Linear, F.relu, operator.add — which onnx2torch's own node classes are not.
Deployment CNNs use a small set of ops, so converting them directly costs less
than shimming a converter and then translating its output a second time.

The file is first simplified the way a deployment tool would have done it:
1. shapes fixed (batch 1) and ONNX Runtime's basic optimizations applied
   (constant folding of shape arithmetic, Cast/Identity removal, transpose
   cancellation, Conv+Add/Mul fusion);
2. `x - c` → `x + (-c)` and `x / c` → `x * (1/c)`, and transposes sunk below
   per-channel constant Add/Mul, so that a BatchNorm decomposed into
   Sub/Mul/Add (common in TF/Caffe exports) folds into its Conv in a second
   ONNX Runtime pass. A constant affine left between a Conv and its ReLU would
   otherwise hide the Conv's real output statistics from gzsq's targets.
"""

from __future__ import annotations

import operator
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.fx as fx
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from .spec import InputSpec


@dataclass(frozen=True)
class OnnxInputOptions:
    """How the ONNX model wants its image: the user states it (flags), gzsq cannot infer it."""

    layout: str | None = None  # "nchw" | "nhwc"; None: from the input shape (last dim 3 → nhwc)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # in the units of `scale`
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1.0  # pixel range the mean/std are given in: 1 (0..1 pixels) or 255 (0..255)
    channel_order: str = "rgb"
    resize: int | None = None  # shorter side before the center crop; None: size / 0.875


# ----------------------------------------------------------------------------------------- loading


def read_onnx(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX file {path} does not exist")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"{path} is not a valid ONNX model: {first[:200]}") from None
    if not proto.graph.node:
        raise ModelLoadError(f"{path} is an ONNX model with an empty graph")
    return proto


def _graph_input(proto: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"the ONNX model has {len(inputs)} inputs; gzsq handles one image input")
    return inputs[0]


def input_shape(proto: onnx.ModelProto) -> list[int | None]:
    dims = _graph_input(proto).type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def infer_layout(shape: list[int | None]) -> str:
    if len(shape) != 4:
        raise UnsupportedModelError(f"the ONNX input has rank {len(shape)}; gzsq expects an image batch "
                                    "(N×C×H×W or N×H×W×C)")
    if shape[1] == 3:
        return "nchw"
    if shape[3] == 3:
        return "nhwc"
    raise UnsupportedModelError(f"cannot tell the layout of ONNX input shape {shape}: neither dim 1 nor dim 3 "
                                "is 3 channels; pass --input-layout")


def make_input_spec(proto: onnx.ModelProto, options: OnnxInputOptions) -> tuple[InputSpec, str]:
    shape = input_shape(proto)
    layout = options.layout or infer_layout(shape)
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    if h is None or w is None or h != w:
        raise UnsupportedModelError(f"the ONNX input must have a fixed square image size, got {shape}")
    mean = tuple(float(m) / options.scale for m in options.mean)
    std = tuple(float(s) / options.scale for s in options.std)
    spec = InputSpec(size=h, mean=mean, std=std, resize_shorter=options.resize or round(h / 0.875),
                     center_crop=h, channel_order=options.channel_order)
    return spec, layout


# ----------------------------------------------------------------------------------- simplification


def _ort_optimize(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as work:
        src, dst = os.path.join(work, "in.onnx"), os.path.join(work, "out.onnx")
        onnx.save(proto, src)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = dst
        options.log_severity_level = 3
        try:
            ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"ONNX Runtime cannot load the model: {first[:200]}") from None
        return onnx.load(dst)


class _Graph:
    """Small mutable view of an ONNX graph: constants by name, producer and consumers of each tensor."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        self.consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "Constant" and node.attribute:
                attr = node.attribute[0]
                if attr.name == "value":
                    self.consts[node.output[0]] = numpy_helper.to_array(attr.t)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return [n for n in self.proto.graph.node if name in n.input]

    def is_output(self, name: str) -> bool:
        return any(o.name == name for o in self.proto.graph.output)

    def add_const(self, name: str, value: np.ndarray) -> str:
        self.proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        self.consts[name] = value
        return name


def _const_operand(g: _Graph, node: onnx.NodeProto) -> tuple[int, np.ndarray] | None:
    """(index of the tensor operand, constant) for a binary op with exactly one constant operand."""
    a, b = node.input[0] in g.consts, node.input[1] in g.consts
    if a == b:
        return None
    return (1, g.consts[node.input[0]]) if a else (0, g.consts[node.input[1]])


def _rewrite_sub_div(g: _Graph) -> None:
    for i, node in enumerate(g.proto.graph.node):
        if node.op_type in ("Sub", "Div") and node.input[1] in g.consts and node.input[0] not in g.consts:
            c = g.consts[node.input[1]].astype(np.float32)
            new = -c if node.op_type == "Sub" else 1.0 / c
            node.input[1] = g.add_const(f"{node.input[1]}__gzsq_{node.op_type.lower()}_{i}", new)
            node.op_type = "Add" if node.op_type == "Sub" else "Mul"


def _sink_transposes(g: _Graph) -> bool:
    """Move Transpose(perm) below a single-consumer constant Add/Mul, Relu, or a residual Add whose two
    inputs are the same transpose; fold it into a following ReduceMean. Returns whether anything changed."""
    nodes = g.proto.graph.node
    for t in list(nodes):
        if t.op_type != "Transpose" or g.is_output(t.output[0]):
            continue
        perm = list(helper.get_attribute_value(t.attribute[0])) if t.attribute else None
        users = g.consumers(t.output[0])
        if perm is None or len(users) != 1:
            continue
        (u,) = users
        inverse = list(np.argsort(perm))
        if u.op_type in ("Add", "Mul") and _const_operand(g, u) is not None:
            _, c = _const_operand(g, u)
            if c.ndim > len(perm):
                continue
            c = c.reshape((1,) * (len(perm) - c.ndim) + c.shape).transpose(inverse)
            ci = 1 if u.input[0] == t.output[0] else 0
            u.input[ci] = g.add_const(f"{u.input[ci]}__gzsq_t{len(g.consts)}", c)
        elif u.op_type == "Relu":
            pass
        elif u.op_type == "Add":
            other = u.input[1] if u.input[0] == t.output[0] else u.input[0]
            t2 = next((n for n in nodes if other in n.output), None)
            if (t2 is None or t2.op_type != "Transpose" or len(g.consumers(other)) != 1
                    or list(helper.get_attribute_value(t2.attribute[0])) != perm):
                continue
            u.input[list(u.input).index(other)] = t2.input[0]
            nodes.remove(t2)
        elif u.op_type == "ReduceMean":
            axes = [a.ints for a in u.attribute if a.name == "axes"]
            if not axes or len(u.input) > 1:
                continue
            new_axes = sorted(perm[a % len(perm)] for a in axes[0])
            keep = [a.i for a in u.attribute if a.name == "keepdims"]
            if keep and keep[0] == 1:
                continue  # the output would still be permuted; leave it to the converter
            for a in u.attribute:
                if a.name == "axes":
                    del a.ints[:]
                    a.ints.extend(new_axes)
            u.input[0] = t.input[0]
            nodes.remove(t)
            return True
        else:
            continue
        # op(transpose(x)) → transpose(op(x)): the op reads x, the transpose moves to the op's output
        x, y = t.input[0], u.output[0]
        mid = f"{y}__gzsq_pre_transpose"
        u.input[list(u.input).index(t.output[0])] = x
        u.output[0] = mid
        t.input[0], t.output[0] = mid, y
        nodes.remove(t)
        nodes.insert(list(nodes).index(u) + 1, t)
        return True
    return False


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fixed batch 1 → ORT basic optimizations → Sub/Div rewrite + transpose sinking → ORT again."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    dim0 = _graph_input(proto).type.tensor_type.shape.dim[0]
    dim0.Clear()
    dim0.dim_value = 1
    proto = _ort_optimize(proto)
    g = _Graph(proto)
    _rewrite_sub_div(g)
    for _ in range(10 * len(proto.graph.node)):
        if not _sink_transposes(g):
            break
    return _ort_optimize(g.proto)


# ----------------------------------------------------------------------------------------- conversion


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _symmetric_pads(pads) -> tuple[int, ...] | None:
    """ONNX [b1, b2, e1, e2] → torch padding (b1, b2) if symmetric, else None (explicit F.pad first)."""
    if not pads:
        return (0, 0)
    half = len(pads) // 2
    begin, end = tuple(pads[:half]), tuple(pads[half:])
    return begin if begin == end else None


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX pads [b_0..b_n, e_0..e_n] → F.pad's (b_n, e_n, b_{n-1}, e_{n-1}, ...)."""
    half = len(pads) // 2
    out = []
    for d in reversed(range(half)):
        out += [int(pads[d]), int(pads[half + d])]
    return out


class _Converter:
    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        self.g = _Graph(proto)
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[str, fx.Node] = {}
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def module(self, prefix: str, module: nn.Module, *args) -> fx.Node:
        name = self._name(prefix)
        self.root.add_module(name, module)
        return self.graph.call_module(name, args)

    def value(self, name: str):
        """A tensor input: a graph value, or a constant registered as a buffer."""
        if name in self.env:
            return self.env[name]
        if name in self.g.consts:
            const = self.g.consts[name]
            if const.dtype.kind == "f":
                const = const.astype(np.float32)
            buffer = self._name("const")
            self.root.register_buffer(buffer, torch.from_numpy(np.array(const)))
            self.env[name] = self.graph.get_attr(buffer)
            return self.env[name]
        raise UnsupportedModelError(f"ONNX tensor {name!r} is neither computed nor constant")

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        if len(node.input) <= index or node.input[index] not in self.g.consts:
            raise UnsupportedModelError(f"ONNX {node.op_type} node {node.name!r}: {what} must be a constant")
        return self.g.consts[node.input[index]]

    def convert(self) -> fx.GraphModule:
        x = self.graph.placeholder("x")
        self.env[_graph_input(self.proto).name] = x
        for node in self.proto.graph.node:
            if node.op_type == "Constant":
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise UnsupportedModelError(f"ONNX operator {node.op_type} (node {node.name!r}) is not supported "
                                            "by gzsq's converter")
            out = handler(node, _attrs(node))
            self.env[node.output[0]] = out
        outputs = [self.env[o.name] for o in self.proto.graph.output]
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        return fx.GraphModule(self.root, self.graph)

    # --- weight layers
    def op_Conv(self, node, a):
        w = torch.from_numpy(self.const(node, 1, "the weight").astype(np.float32))
        if w.dim() != 4:
            raise UnsupportedModelError(f"ONNX Conv {node.name!r} is {w.dim() - 2}-D; gzsq handles 2-D convolutions")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            raise UnsupportedModelError(f"ONNX Conv {node.name!r} uses auto_pad {a['auto_pad'].decode()}")
        x = self.value(node.input[0])
        padding = _symmetric_pads(a.get("pads"))
        if padding is None:
            x = self.graph.call_function(F.pad, (x, _torch_pad([0, 0] + list(a["pads"][:2]) + [0, 0]
                                                            + list(a["pads"][2:]))))
            padding = (0, 0)
        has_bias = len(node.input) > 2 and node.input[2]
        conv = nn.Conv2d(w.shape[1] * a.get("group", 1), w.shape[0], tuple(w.shape[2:]),
                         stride=tuple(a.get("strides", (1, 1))), padding=tuple(padding),
                         dilation=tuple(a.get("dilations", (1, 1))), groups=a.get("group", 1), bias=bool(has_bias))
        with torch.no_grad():
            conv.weight.copy_(w)
            if has_bias:
                conv.bias.copy_(torch.from_numpy(self.const(node, 2, "the bias").astype(np.float32)))
        return self.module("conv", conv, x)

    def _linear(self, x, weight: np.ndarray, bias: np.ndarray | None):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
            if bias is not None:
                layer.bias.copy_(torch.from_numpy(np.broadcast_to(bias, (weight.shape[0],)).astype(np.float32)))
        return self.module("linear", layer, x)

    def op_Gemm(self, node, a):
        if a.get("transA", 0):
            raise UnsupportedModelError(f"ONNX Gemm {node.name!r} with transA is not supported")
        b = self.const(node, 1, "B (the weight)") * a.get("alpha", 1.0)
        weight = b if a.get("transB", 0) else b.T
        bias = self.const(node, 2, "C (the bias)") * a.get("beta", 1.0) if len(node.input) > 2 and node.input[2] else None
        return self._linear(self.value(node.input[0]), weight, bias)

    def op_MatMul(self, node, a):
        b = self.const(node, 1, "the second operand")
        if b.ndim != 2:
            raise UnsupportedModelError(f"ONNX MatMul {node.name!r} with a {b.ndim}-D weight is not supported")
        return self._linear(self.value(node.input[0]), b.T, None)

    def op_BatchNormalization(self, node, a):
        scale, bias, mean, var = (self.const(node, i, "BN parameters") for i in (1, 2, 3, 4))
        bn = nn.BatchNorm2d(len(scale), eps=a.get("epsilon", 1e-5))
        with torch.no_grad():
            for t, v in ((bn.weight, scale), (bn.bias, bias), (bn.running_mean, mean), (bn.running_var, var)):
                t.copy_(torch.from_numpy(v.astype(np.float32)))
        return self.module("bn", bn.eval(), self.value(node.input[0]))

    # --- element-wise
    def _binary(self, node, fn):
        return self.graph.call_function(fn, (self.value(node.input[0]), self.value(node.input[1])))

    def op_Add(self, node, a):
        return self._binary(node, operator.add)

    def op_Sub(self, node, a):
        return self._binary(node, operator.sub)

    def op_Mul(self, node, a):
        return self._binary(node, operator.mul)

    def op_Div(self, node, a):
        return self._binary(node, operator.truediv)

    def op_Relu(self, node, a):
        return self.graph.call_function(F.relu, (self.value(node.input[0]),))

    def op_Clip(self, node, a):
        lo = float(self.const(node, 1, "min")) if len(node.input) > 1 and node.input[1] else a.get("min", None)
        hi = float(self.const(node, 2, "max")) if len(node.input) > 2 and node.input[2] else a.get("max", None)
        x = self.value(node.input[0])
        if lo == 0.0 and hi == 6.0:
            return self.graph.call_function(F.relu6, (x,))
        if lo == 0.0 and hi is None:
            return self.graph.call_function(F.relu, (x,))
        return self.graph.call_function(torch.clamp, (x, lo, hi))

    def op_Sigmoid(self, node, a):
        return self.graph.call_function(torch.sigmoid, (self.value(node.input[0]),))

    def op_HardSwish(self, node, a):
        return self.graph.call_function(F.hardswish, (self.value(node.input[0]),))

    def op_LeakyRelu(self, node, a):
        return self.graph.call_function(F.leaky_relu, (self.value(node.input[0]), a.get("alpha", 0.01)))

    def op_Softmax(self, node, a):
        return self.graph.call_function(F.softmax, (self.value(node.input[0]), a.get("axis", -1)))

    def op_Identity(self, node, a):
        return self.value(node.input[0])

    op_Dropout = op_Identity

    def op_Cast(self, node, a):
        if a.get("to") != onnx.TensorProto.FLOAT:
            raise UnsupportedModelError(f"ONNX Cast {node.name!r} to a non-float type is not supported")
        return self.value(node.input[0])

    # --- pooling and shape
    def _pool(self, node, a, cls, **kwargs):
        x = self.value(node.input[0])
        padding = _symmetric_pads(a.get("pads"))
        if padding is None:
            fill = float("-inf") if cls is nn.MaxPool2d else 0.0
            x = self.graph.call_function(F.pad, (x, _torch_pad([0, 0] + list(a["pads"][:2]) + [0, 0]
                                                            + list(a["pads"][2:])), "constant", fill))
            padding = (0, 0)
        pool = cls(tuple(a["kernel_shape"]), stride=tuple(a.get("strides", a["kernel_shape"])),
                   padding=tuple(padding), ceil_mode=bool(a.get("ceil_mode", 0)), **kwargs)
        return self.module("pool", pool, x)

    def op_MaxPool(self, node, a):
        return self._pool(node, a, nn.MaxPool2d)

    def op_AveragePool(self, node, a):
        return self._pool(node, a, nn.AvgPool2d, count_include_pad=bool(a.get("count_include_pad", 0)))

    def op_GlobalAveragePool(self, node, a):
        return self.graph.call_function(F.adaptive_avg_pool2d, (self.value(node.input[0]), 1))

    def op_ReduceMean(self, node, a):
        axes = a.get("axes") or (self.const(node, 1, "axes").tolist() if len(node.input) > 1 else None)
        if axes is None:
            raise UnsupportedModelError(f"ONNX ReduceMean {node.name!r} without axes is not supported")
        return self.graph.call_function(torch.mean, (self.value(node.input[0]),),
                                        {"dim": tuple(int(x) for x in axes), "keepdim": bool(a.get("keepdims", 1))})

    def op_Flatten(self, node, a):
        return self.graph.call_function(torch.flatten, (self.value(node.input[0]), a.get("axis", 1)))

    def op_Reshape(self, node, a):
        shape = [int(s) for s in self.const(node, 1, "the target shape")]
        if shape and shape[0] == 1:  # the batch dimension was fixed to 1 for simplification; free it again
            shape[0] = -1
        return self.graph.call_method("reshape", (self.value(node.input[0]), tuple(shape)))

    def op_Transpose(self, node, a):
        return self.graph.call_method("permute", (self.value(node.input[0]), tuple(a["perm"])))

    def op_Concat(self, node, a):
        return self.graph.call_function(torch.cat, ([self.value(i) for i in node.input],), {"dim": a["axis"]})

    def op_Squeeze(self, node, a):
        axes = a.get("axes") or (self.const(node, 1, "axes").tolist() if len(node.input) > 1 else None)
        x = self.value(node.input[0])
        return self.graph.call_method("squeeze", (x, tuple(axes))) if axes else self.graph.call_method("squeeze", (x,))

    def op_Unsqueeze(self, node, a):
        axes = a.get("axes") or self.const(node, 1, "axes").tolist()
        x = self.value(node.input[0])
        for axis in sorted(int(v) for v in axes):
            x = self.graph.call_method("unsqueeze", (x, axis))
        return x

    def op_Pad(self, node, a):
        pads = list(a.get("pads") or self.const(node, 1, "pads").tolist())
        value = float(self.const(node, 2, "the pad value")) if len(node.input) > 2 and node.input[2] else 0.0
        mode = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}.get(
            a.get("mode", b"constant").decode())
        if mode is None:
            raise UnsupportedModelError(f"ONNX Pad {node.name!r} mode {a['mode'].decode()} is not supported")
        x = self.value(node.input[0])
        torch_pads = _torch_pad(pads)
        if mode != "constant":
            while len(torch_pads) > 4 and torch_pads[-2:] == [0, 0]:
                torch_pads = torch_pads[:-2]  # replicate/reflect pad only the trailing (spatial) dims
            return self.graph.call_function(F.pad, (x, tuple(torch_pads), mode))
        return self.graph.call_function(F.pad, (x, tuple(torch_pads), "constant", value))


class _ChannelsFirst(nn.Module):
    """Feed an N×H×W×C network from gzsq's N×C×H×W tensors."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 2, 3, 1))


def load_onnx_model(path: str | Path, options: OnnxInputOptions | None = None) -> nn.Module:
    """An ONNX classifier as an nn.Module taking normalized N×C×H×W input, with `.input_spec`,
    `.onnx_path` and `.onnx_layout` (what ONNX Runtime must be fed)."""
    options = options or OnnxInputOptions()
    proto = read_onnx(path)
    spec, layout = make_input_spec(proto, options)
    simplified = simplify(proto)
    try:
        net = _Converter(simplified).convert()
    except (UnsupportedModelError, ModelLoadError):
        raise
    except Exception as exc:  # an inconsistent graph ORT accepted (shapes that do not fit, odd attributes)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"cannot convert {Path(path).name} to PyTorch: {first[:200]}") from None
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules()):
        raise UnsupportedModelError(f"{path} has no Conv or Gemm/MatMul layer with constant weights to quantize")
    model = fx.symbolic_trace(_ChannelsFirst(net)) if layout == "nhwc" else net
    model.eval()
    model.input_spec = spec
    model.gzsq_name = Path(path).name
    model.onnx_path = str(path)
    model.onnx_layout = layout
    from .validate import validate_model

    validate_model(model)
    return model
