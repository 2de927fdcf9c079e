"""Frozen configuration objects; variants via dataclasses.replace (STYLE.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ConfigError
from .quantize.observers import OBSERVERS
from .quantize.primitives import check_bits


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how (SPEC §4). Defaults: the spec's reference scheme."""

    w_bits: int = 8
    a_bits: int = 8
    per_channel_weights: bool = True  # symmetric per-output-channel; False: one scale per tensor
    weight_clip: str = "maxabs"  # "maxabs" or "mse" (MSE-optimal clipping, useful at ≤ 6 bits)
    observer: str = "minmax"  # activation range rule: minmax | percentile | mse
    input_bits: int = 8  # the network input is an 8-bit image whatever a_bits says
    first_last_8bit: bool = False  # keep the first and last weight layer (and their inputs) at 8 bit
    # Where activations are quantized. "spec": SPEC §4 (network input, every Conv/Linear input, residual-add
    # outputs) — the reference for every published accuracy. "runtime": every tensor an int8 runtime stores,
    # as ONNX Runtime's QDQ graphs do (also Conv/Linear outputs, pooled, padded and sliced tensors, logits);
    # use it to predict what the exported int8 model will do.
    placement: str = "spec"

    def __post_init__(self):
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        check_bits(self.input_bits, "input_bits")
        if self.observer not in OBSERVERS:
            raise ConfigError(f"unknown observer {self.observer!r}; choose one of {', '.join(OBSERVERS)}")
        if self.placement not in ("spec", "runtime"):
            raise ConfigError(f"placement must be 'spec' or 'runtime', got {self.placement!r}")
        if self.weight_clip not in ("maxabs", "mse"):
            raise ConfigError(f"weight_clip must be 'maxabs' or 'mse', got {self.weight_clip!r}")

    def to_dict(self) -> dict:
        return asdict(self)
