"""The simulation model → ONNX QDQ file + encodings JSON, writing exactly the encodings it holds.

ONNX Runtime's own quantizer calibrates again and rounds the float weights itself; after
reconstruction the rounding and the step sizes are *learned*, so they must be written, not
recomputed. Here every activation quantizer of a `SimModel` becomes QuantizeLinear →
DequantizeLinear with its scale and zero point, and every quantized weight is stored as its
integers with a per-output-channel DequantizeLinear: the file holds the simulator's numbers,
bit for bit, and nothing is calibrated twice.

Containers (ONNX opset 21):
- 4 bits: int4 weights, uint4 activations (ONNX's 4-bit types).
- 8 bits: int8 weights; activations int8 with the zero point moved by −128, the very grid of the
  simulator's uint8 (x = s·(u − z) = s·((u − 128) − (z − 128))). Even so, ONNX Runtime's fused kernels
  on x86 CPUs without VNNI saturate on full-range 8-bit weights (results/sim_export_pair_safe.txt), so
  `gzsq quantize` simulates 8-bit weights on pair-safe grids (`QuantConfig.pair_safe_8bit`).
- 2, 3, 5, 6, 7 bits: the 8-bit container holding values of the narrower grid; an activation gets
  a Clip to its grid's ends in front of QuantizeLinear, so its values are exactly the narrow grid's.
  A 4-bit activation read from a max-pool goes the same way: ONNX Runtime moves a quantizer after a
  max-pool to before it, and has no max-pool on 4-bit tensors.

The encodings file (`encodings_path_for(out)`, format "gzsq-encodings" version 1) lists, per
tensor of the ONNX file: bits, scale(s), zero point, signedness and container; its conventions are
in `ENCODINGS_README` and docs/how-it-works.md §4.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.fx as fx
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..atomic import atomic_path, write_text_atomic
from ..quantization.sim import WEIGHT_LAYERS, ActQuantizer, SimModel
from .onnx_fp32 import INPUT_NAME, OUTPUT_NAME, input_metadata
from .onnx_int8 import clip_bounds

OPSET = 21
ENCODINGS_FORMAT = "gzsq-encodings"
ENCODINGS_README = (
    "real = scale * (q - zero_point). Activations: per tensor, unsigned grid q in [0, 2^bits - 1] "
    "(scale, zero_point in that convention), stored in `container` (int8 containers hold q - 128 with "
    "zero point zero_point - 128). Weights: symmetric per output channel (axis 0 of the ONNX weight), "
    "q in [-(2^(bits-1) - 1), 2^(bits-1) - 1], zero point 0, one scale per channel (a list) or per tensor "
    "(a number). `tensor`: the ONNX tensor that holds the dequantized value.")


def encodings_path_for(out: str | Path) -> Path:
    """Where the encodings JSON goes beside an ONNX file: OUT.encodings.json."""
    out = Path(out)
    return out.with_name(out.stem + ".encodings.json")


class _Mark(torch.autograd.Function):
    """Identity in PyTorch; in the ONNX graph a `gzsq::Mark` node replaced afterwards by Q/DQ nodes."""

    @staticmethod
    def forward(ctx, x, index):  # noqa: ARG004
        return x

    @staticmethod
    def symbolic(g, x, index):
        out = g.op("gzsq::Mark", x, index_i=index)
        out.setType(x.type())
        return out


class _MarkedActivation(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        return _Mark.apply(x, self.index)


class _MarkedLayer(nn.Module):
    """A Conv2d/Linear whose weight passes through a marker (its DequantizeLinear once rewritten)."""

    def __init__(self, layer: nn.Module, index: int):
        super().__init__()
        self.layer, self.index = layer, index

    def forward(self, x):
        w = _Mark.apply(self.layer.weight, self.index)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


def _container(bits: int, signed: bool) -> str:
    """The ONNX type that stores a `bits`-bit grid: the 4-bit types at 4 bits, 8-bit ones otherwise."""
    if bits == 4:
        return "int4" if signed else "uint4"
    return "int8" if signed else "uint8"


_ELEMENT = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int8": TensorProto.INT8,
            "uint8": TensorProto.UINT8}


def _int_tensor(name: str, values, container: str) -> TensorProto:
    values = np.asarray(values, dtype=np.int64)
    if container in ("int8", "uint8"):
        return numpy_helper.from_array(values.astype(container), name)
    return helper.make_tensor(name, _ELEMENT[container], list(values.shape), values.reshape(-1).tolist())


def _integer_weights(layer: nn.Module, bits: int, scale: torch.Tensor) -> np.ndarray:
    """The integers the simulator's weight holds (weight = q · scale, q on the signed restricted grid)."""
    w = layer.weight.detach().double()
    s = scale.detach().double()
    s = s.reshape((-1,) + (1,) * (w.dim() - 1)) if s.dim() else s
    q = torch.round(w / s)
    qmax = 2 ** (bits - 1) - 1
    if not torch.allclose(q * s, w, rtol=1e-5, atol=1e-12) or q.abs().max() > qmax:
        raise ValueError(f"the weight of {layer} is not on its {bits}-bit grid")
    return q.to(torch.int64).numpy()


def _marked_module(sim: SimModel) -> tuple[fx.GraphModule, list[tuple[str, str, object]]]:
    """A copy of the simulator's graph with markers in place of quantizers. → (module, marks):
    marks[i] = (kind, name, quantizer or (layer, bits, scale))."""
    gm = fx.GraphModule(sim.net, copy.deepcopy(sim.net.graph))  # shares the modules, not the graph
    marks: list[tuple[str, str, object]] = []
    modules = dict(sim.net.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if isinstance(module, ActQuantizer):
            marks.append(("activation", node.target, module))
            replacement = _MarkedActivation(len(marks) - 1)
        elif isinstance(module, WEIGHT_LAYERS) and node.target in sim.weight_scales:
            bits, scale = sim.weight_scales[node.target]
            marks.append(("weight", node.target, (module, bits, scale)))
            replacement = _MarkedLayer(module, len(marks) - 1)
        else:
            continue
        new_name = f"gzsq_mark_{len(marks) - 1}"
        gm.add_submodule(new_name, replacement)
        node.target = new_name
    gm.recompile()
    return gm.eval(), marks


def _rewrite(proto: onnx.ModelProto, marks, bias_scales: dict) -> dict:
    """Replace every gzsq::Mark node by the Q/DQ nodes (or integer weight + DQ) of its encoding."""
    graph = proto.graph
    consumers_rename: dict[str, str] = {}
    new_nodes, new_inits = [], []
    activations, weights = {}, {}
    bias_inputs: dict[str, str] = {}  # layer → its int32 bias's DequantizeLinear output
    weight_outputs: dict[str, str] = {}  # the marker output a layer's Conv/Gemm reads → layer
    producer = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.domain != "gzsq":
            new_nodes.append(node)
            continue
        index = next(a.i for a in node.attribute if a.name == "index")
        kind, name, payload = marks[index]
        src = node.input[0]
        if kind == "activation":
            q: ActQuantizer = payload
            bits = q.bits
            # ONNX Runtime moves the Q/DQ pair after a max-pool in front of it and has no 4-bit max-pool
            narrow = bits not in (4, 8) or (bits == 4 and producer.get(src) == "MaxPool")
            container = "uint8" if narrow else _container(bits, signed=False)
            zero = q.zero_point
            scale_name, zero_name, out = f"{name}.scale", f"{name}.zero_point", name
            new_inits.append(numpy_helper.from_array(np.array(q.scale, np.float32), scale_name))
            new_inits.append(_int_tensor(zero_name, zero, container))
            x = src
            if narrow:  # a narrower grid in the 8-bit container: clip to its ends first
                lo, hi = (0 - q.zero_point) * q.scale, (2 ** bits - 1 - q.zero_point) * q.scale
                new_inits.append(numpy_helper.from_array(np.array(lo, np.float32), f"{name}.clip_min"))
                new_inits.append(numpy_helper.from_array(np.array(hi, np.float32), f"{name}.clip_max"))
                new_nodes.append(helper.make_node("Clip", [src, f"{name}.clip_min", f"{name}.clip_max"],
                                                  [f"{name}.clipped"], name=f"{name}/Clip"))
                x = f"{name}.clipped"
            new_nodes.append(helper.make_node("QuantizeLinear", [x, scale_name, zero_name], [f"{name}.q"],
                                              name=f"{name}/QuantizeLinear"))
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}.q", scale_name, zero_name], [out],
                                              name=f"{name}/DequantizeLinear"))
            activations[name] = {"tensor": out, "role": q.role, "bits": bits, "signed": False,
                                 "scale": q.scale, "zero_point": q.zero_point, "min": q.lo, "max": q.hi,
                                 "container": container}
        else:
            layer, bits, scale = payload
            ints = _integer_weights(layer, bits, scale)
            container = _container(bits, signed=True)
            scales = scale.detach().float().numpy()
            base = f"{name}.weight"
            new_inits.append(_int_tensor(f"{base}.q", ints, container))
            new_inits.append(numpy_helper.from_array(scales.astype(np.float32), f"{base}.scale"))
            new_inits.append(_int_tensor(f"{base}.zero_point", np.zeros(scales.shape, np.int64), container))
            attrs = {"axis": 0} if scales.ndim else {}
            out = f"{base}.dequantized"
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{base}.q", f"{base}.scale", f"{base}.zero_point"],
                                              [out], name=f"{name}/weight/DequantizeLinear", **attrs))
            weights[name] = {"tensor": out, "bits": bits, "signed": True, "axis": 0 if scales.ndim else None,
                             "scale": scales.tolist(), "zero_point": 0, "container": container}
            bias_scale = bias_scales.get(name)
            if bias_scale is not None:  # int32 at input scale × weight scale, as the simulator rounded it
                bias = layer.bias.detach().float()
                ints = torch.round(bias / bias_scale).to(torch.int64).numpy()
                new_inits.append(numpy_helper.from_array(ints.astype(np.int32), f"{name}.bias.q"))
                new_inits.append(numpy_helper.from_array(bias_scale.float().numpy(), f"{name}.bias.scale"))
                new_inits.append(numpy_helper.from_array(np.zeros(ints.shape, np.int32), f"{name}.bias.zero_point"))
                new_nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{name}.bias.q", f"{name}.bias.scale", f"{name}.bias.zero_point"],
                    [f"{name}.bias.dequantized"], name=f"{name}/bias/DequantizeLinear", axis=0))
                bias_inputs[name] = f"{name}.bias.dequantized"
                weights[name]["bias"] = {"tensor": f"{name}.bias.dequantized", "bits": 32, "signed": True,
                                         "axis": 0, "scale": bias_scale.tolist(), "zero_point": 0,
                                         "container": "int32"}
            weight_outputs[node.output[0]] = name
        consumers_rename[node.output[0]] = out
    del graph.node[:]
    for node in new_nodes:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[1] in weight_outputs:
            layer = weight_outputs[node.input[1]]
            if layer in bias_inputs:
                node.input[2] = bias_inputs[layer]
        for i, inp in enumerate(node.input):
            if inp in consumers_rename:
                node.input[i] = consumers_rename[inp]
    graph.node.extend(new_nodes)
    stale = [v for v in graph.value_info if v.name in consumers_rename]
    for v in stale:
        graph.value_info.remove(v)
    for out in graph.output:
        if out.name in consumers_rename:
            raise ValueError("a quantizer on the model's output is not supported")
    # drop the float weights that integer initializers replaced, and the custom domain
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    kept_opsets = [o for o in proto.opset_import if o.domain != "gzsq"]
    del proto.opset_import[:]
    proto.opset_import.extend(kept_opsets)
    return {"activations": activations, "weights": weights}


def _no_clip_into_4bit_quantize(proto: onnx.ModelProto, activations: dict) -> None:
    """Keep a bounded activation (ReLU6 exports as Clip(0, 6)) from feeding a 4-bit QuantizeLinear directly.

    ONNX Runtime fuses Clip → QuantizeLinear at load time and reads the zero point as 8-bit only: a 4-bit one
    makes it refuse the whole file, so every ReLU6 network at 4-bit activations would be unusable there. Where the
    quantizer's own saturation already does the Clip's work (Q(lo) and Q(hi) are the grid's ends), the quantizer
    reads the Clip's input; otherwise the Clip becomes Max then Min, the same values with no fusion to trip on."""
    bounds = clip_bounds(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    grids = {f"{name}/QuantizeLinear": a for name, a in activations.items() if a["container"] == "uint4"}
    nodes = []
    for node in proto.graph.node:
        a = grids.get(node.name) if node.op_type == "QuantizeLinear" else None
        clip = producer.get(node.input[0]) if a is not None else None
        if clip is None or clip.op_type != "Clip" or node.input[0] not in bounds:
            nodes.append(node)
            continue
        lo, hi = bounds[node.input[0]]
        scale, zero = np.float32(a["scale"]), a["zero_point"]
        if lo / scale + zero < 0.499 and hi / scale + zero > 2 ** a["bits"] - 1.499:
            node.input[0] = clip.input[0]  # the Clip stays for any other reader (there is none in these files)
        else:
            name = node.name.rsplit("/", 1)[0]
            proto.graph.initializer.extend([numpy_helper.from_array(np.array(lo, np.float32), f"{name}.floor"),
                                            numpy_helper.from_array(np.array(hi, np.float32), f"{name}.ceiling")])
            nodes += [helper.make_node("Max", [clip.input[0], f"{name}.floor"], [f"{name}.floored"],
                                       name=f"{name}/Max"),
                      helper.make_node("Min", [f"{name}.floored", f"{name}.ceiling"], [f"{name}.bounded"],
                                       name=f"{name}/Min")]
            node.input[0] = f"{name}.bounded"
        nodes.append(node)
    used = {i for n in nodes for i in n.input} | {o.name for o in proto.graph.output}
    nodes = [n for n in nodes if n.op_type != "Clip" or any(o in used for o in n.output)]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def export_sim_onnx(sim: SimModel, out: str | Path, *, model_name: str = "", layout: str = "nchw") -> dict:
    """Write `sim` as an ONNX QDQ file at `out` and its encodings at OUT.encodings.json (both atomic).

    → the encodings dict (also written). The file's DequantizeLinear outputs reproduce the simulator's
    fake-quantized values (ONNX Runtime runs them in float where it has no integer kernel for a pattern).
    """
    out = Path(out)
    spec = sim.input_spec
    gm, marks = _marked_module(sim)
    example = torch.zeros(1, *spec.shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and custom-op shape notices
        buffer = io.BytesIO()
        torch.onnx.export(gm, (example,), buffer, dynamo=False, opset_version=OPSET, custom_opsets={"gzsq": 1},
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    tensors = _rewrite(proto, marks, sim.bias_scales)
    _no_clip_into_4bit_quantize(proto, tensors["activations"])
    for key, value in input_metadata(spec, layout).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    encodings = {"format": ENCODINGS_FORMAT, "version": 1, "conventions": ENCODINGS_README,
                 "model": model_name, "onnx": out.name, "quantization": sim.config.to_dict(),
                 "reconstruction": getattr(sim, "reconstruction", None), **tensors}
    enc_path = encodings_path_for(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        write_text_atomic(enc_path, json.dumps(encodings, indent=1) + "\n")
    return encodings
