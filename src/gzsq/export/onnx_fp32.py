"""Export a (folded) PyTorch classifier to an FP32 ONNX file that ONNX Runtime can quantize.

The TorchScript-based exporter (`dynamo=False`) is used on purpose: for these
static CNNs it writes one self-contained file with a symbolic batch dimension,
while the dynamo exporter splits weights into a side `.data` file and cannot
down-convert Pad to opset 17. The model's preprocessing (`InputSpec`) is stored
in the file's metadata so the int8 model carries it too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from ..atomic import atomic_path
from ..fold import fold_bn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def input_metadata(spec, layout: str = "nchw") -> dict[str, str]:
    """What a runtime user needs to feed the model, as ONNX metadata strings."""
    return {"gzsq.input": json.dumps({"layout": layout, "size": spec.size, "mean_0to1": list(spec.mean),
                                      "std_0to1": list(spec.std), "channel_order": spec.channel_order})}


def export_fp32_onnx(model: nn.Module, path: str | Path) -> Path:
    """Fold BN, export NCHW float input → logits with a dynamic batch; write atomically."""
    path = Path(path)
    graph_module = fold_bn(model).eval()
    spec = model.input_spec
    example = torch.zeros(1, *spec.shape)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(graph_module, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        proto = onnx.load(str(tmp))
        for key, value in input_metadata(spec).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return path
