"""Fold BatchNorm into the layer that feeds it (the first step of every quantization).

Works on the traced data-flow graph (torch.fx), not on module names: a BN is
folded into the Conv2d/Linear whose output it reads, provided nothing else reads
that output. y = γ (Wx + b − μ) / sqrt(σ² + ε) + β becomes W' = W·γ/√(σ²+ε),
b' = (b − μ)·γ/√(σ²+ε) + β, exact up to float rounding.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from .errors import UnsupportedModelError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_FOLDABLE = (nn.Conv2d, nn.Linear)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a model, turning fx's long errors into one line."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"cannot trace {type(model).__name__} into a static graph: {first}") from None
    _carry_attributes(model, graph_module)
    return graph_module


# What a loaded model knows about itself (models/zoo.py, models/onnx_import.py); every copy keeps it.
CARRIED_ATTRIBUTES = ("input_spec", "gzsq_name", "onnx_path", "onnx_layout")


def _carry_attributes(src: nn.Module, dst: nn.Module) -> None:
    for attr in CARRIED_ATTRIBUTES:
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module) -> nn.Module:
    inv = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    folded = copy.deepcopy(layer)
    if folded.bias is None:
        folded.bias = nn.Parameter(torch.zeros(folded.weight.shape[0], dtype=folded.weight.dtype))
    shape = (-1,) + (1,) * (folded.weight.dim() - 1)
    folded.weight.mul_(inv.view(shape))
    folded.bias.copy_((folded.bias - bn.running_mean) * inv + shift)
    return folded


def fold_bn(model: nn.Module) -> fx.GraphModule:
    """Return a new traced model with every BatchNorm folded away; the input is untouched."""
    gm = trace(copy.deepcopy(model).eval())
    _carry_attributes(model, gm)  # deepcopy of a GraphModule drops attributes it does not know
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BN):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules[src.target], _FOLDABLE) and len(src.users) == 1):
            raise UnsupportedModelError(f"BatchNorm {node.target} does not directly follow a Conv2d/Linear "
                                        "whose output only it reads; it cannot be folded")
        bn = modules[node.target]
        if bn.running_mean is None:
            raise UnsupportedModelError(f"BatchNorm {node.target} has no running statistics to fold")
        _set_submodule(gm, src.target, _fold_pair(modules[src.target], bn))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, leaf = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)
