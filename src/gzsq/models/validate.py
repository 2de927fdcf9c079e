"""Checks a model must pass before gzsq spends minutes on it.

Every zoo model is validated when loaded, and `make_calibration` validates the
modules users hand the Python API: a model gzsq cannot work on should fail in
a second with one line naming the problem, not after a distillation with a
traceback from deep inside torch. The checks:

- it holds at least one Conv2d or Linear layer (there is nothing to quantize,
  and no weight statistics to distill from, otherwise);
- every parameter and floating buffer is finite (NaN/Inf weights make NaN
  targets and NaN ranges);
- it accepts its own `input_spec` (a 1×C×H×W probe runs through it) and returns
  N×classes logits — which also gives the number of classes, so labels can be
  checked against it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedModelError

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def model_name(model: nn.Module) -> str:
    """The name a model is reported under: its zoo name or file name, else its class."""
    return getattr(model, "gzsq_name", type(model).__name__)


def check_weight_layers(model: nn.Module) -> None:
    if not any(isinstance(m, WEIGHT_LAYERS) for m in model.modules()):
        raise UnsupportedModelError(f"{model_name(model)} has no Conv2d or Linear layer: nothing to quantize "
                                    "(gzsq handles CNNs built from Conv2d/Linear layers)")


def check_finite(model: nn.Module) -> None:
    tensors = list(model.named_parameters()) + [(k, b) for k, b in model.named_buffers() if b.is_floating_point()]
    for key, t in tensors:
        if not torch.isfinite(t.detach()).all():
            raise UnsupportedModelError(f"{model_name(model)}: weights hold NaN/Inf in {key}; "
                                        "re-export the model from a healthy checkpoint")


@torch.no_grad()
def check_input(model: nn.Module) -> int:
    """Run a 1×C×H×W zero probe through the model in eval mode; → number of output classes.

    Train/eval flags are restored afterwards, so the probe changes nothing.
    """
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ConfigError(f"{model_name(model)} carries no input_spec; load it with gzsq.models.load_model "
                          "or set model.input_spec = InputSpec(...)")
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        out = model(torch.zeros((1,) + tuple(spec.shape)))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedModelError(f"{model_name(model)} does not accept its input size "
                                    f"{'×'.join(map(str, spec.shape))} ({first}); check the model's input_spec") from None
    finally:
        for m, training in flags.items():
            m.training = training
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UnsupportedModelError(f"{model_name(model)} returns {shape} for one image; gzsq needs N×classes logits")
    return int(out.shape[1])


def validate_model(model: nn.Module) -> int:
    """All the checks above, cheapest first; → number of classes the model predicts."""
    check_weight_layers(model)
    check_finite(model)
    return check_input(model)
