"""The op kinds gzsq's graph passes recognize, declared once (statistics targets and the simulator).

Both passes walk the same traced graphs and must agree on what counts as a ReLU
(it rectifies statistics; it fuses into its producer's quantizer) and as a
residual add (it sums statistics; it gets its own quantizer).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

RELU_FUNCS = {F.relu, torch.relu, F.relu6, F.hardtanh}
RELU_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_RELU6_FUNCS = {F.relu6, F.hardtanh}
_RELU6_MODULES = (nn.ReLU6, nn.Hardtanh)
ADD_FUNCS = {operator.add, torch.add, operator.iadd}
CAT_FUNCS = {torch.cat, torch.concat}


def is_relu(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_function":
        return node.target in RELU_FUNCS
    return node.op == "call_module" and isinstance(modules[node.target], RELU_MODULES)


def is_residual_add(node: fx.Node) -> bool:
    """The sum of two tensors (an add with a constant, as inside hardswish, is not one)."""
    return (node.op == "call_function" and node.target in ADD_FUNCS
            and sum(isinstance(a, fx.Node) for a in node.args) == 2)


def is_relu6(node: fx.Node, modules: dict) -> bool:
    """ReLU6 (and hardtanh, its traced form): rectified statistics are capped at 6."""
    if node.op == "call_function":
        return node.target in _RELU6_FUNCS
    return node.op == "call_module" and isinstance(modules[node.target], _RELU6_MODULES)
