"""PyTorch int8 via PT2E: torch.export → torchao's X86InductorQuantizer → calibrate → convert.

An optional extra (`pip install -e '.[pt2e]'`, torchao). The converted program holds
quantize/dequantize ops around int8-representable weights and activations; run eagerly
it computes the reference numerics, and `torch.compile` (Inductor) lowers those
patterns to real int8 CPU kernels. The calibration images are gzsq's, exactly as
for the ONNX Runtime path. Saved with `torch.export.save` as a `.pt2` file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import interrupt
from ..atomic import atomic_path
from ..errors import GzsqError
from ..fold import fold_bn


def _torchao():
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise GzsqError("the PT2E backend needs torchao: pip install -e '.[pt2e]'") from None
    return x86, prepare_pt2e, convert_pt2e


def _export(module: nn.Module, example: torch.Tensor):
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


@torch.no_grad()
def quantize_pt2e(model: nn.Module, calib_images: torch.Tensor, *, batch_size: int = 64) -> torch.fx.GraphModule:
    """The converted PT2E int8 module of the BN-folded `model`, calibrated on `calib_images` (N×C×H×W)."""
    x86, prepare_pt2e, convert_pt2e = _torchao()
    folded = fold_bn(model).eval()
    program = _export(folded, calib_images[:2])
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(program.module(), quantizer)
    for start in range(0, len(calib_images), batch_size):
        interrupt.check("pt2e-calibration")
        prepared(calib_images[start:start + batch_size])
    return _evaluable(convert_pt2e(prepared))


def _evaluable(module: nn.Module) -> nn.Module:
    """Exported modules refuse .eval(); gzsq's evaluation calls it, and these graphs hold no BN/dropout."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    return allow_exported_model_train_eval(module)


def save_pt2e(converted: torch.fx.GraphModule, example: torch.Tensor, path: str | Path) -> Path:
    """Re-export the converted module and save it (atomically) as a .pt2 program."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.export.save(_export(converted, example[:2]), str(tmp))
    return path


def load_pt2e(path: str | Path) -> nn.Module:
    _torchao()
    return _evaluable(torch.export.load(str(path)).module())
