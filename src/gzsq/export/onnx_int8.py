"""FP32 ONNX → int8 ONNX (QDQ) with ONNX Runtime's static quantizer, calibrated on gzsq's images.

The scheme follows SPEC §4 as ONNX Runtime can express it: weights int8
symmetric per output channel, activations uint8 asymmetric per tensor, ranges
from min/max over the calibration set, logits left float.

Weights sit on ONNX Runtime's `reduce_range` grid ([−64, 64]) by default. On x86
CPUs without VNNI (this machine: AVX2 only) the u8×s8 kernels sum pairs of
products in 16 bits, and with full-range weights those sums saturate (measured
here, results/onnx_int8_diagnostics.txt): ResNet-20's u8×s8 model agreed with
FP32 on 93.7 % of images against 98.5 % for s8×s8, and on EfficientNet-Lite0
(large folded depthwise weights) even the s8×s8 kernels disagreed with ONNX
Runtime's own QDQ reference on 10 % of images. With the reduced grid the fused
kernels agree with that reference on ≥ 99.6 % of images, and u8×s8 is the fast
path here: 1.3–1.7× faster than FP32 at batch 1
(benchmarks/results/latency.txt), where s8×s8 was slower than FP32. Pass `reduce_range=False` for CPUs
with VNNI or ARM dot-product instructions. `activations="int8"` with full-range
weights reproduces the full 8-bit grid exactly on ResNet-20 (fused kernels =
QDQ reference); the simulator-agreement test uses it.
The network input's range is not calibrated but set to the model's valid pixel
range (as in the simulated model), injected through `TensorQuantOverrides`.

Two pitfalls are handled here rather than left to the user:
- a model with a fixed batch dimension gets calibration batches of exactly
  that size (ONNX Runtime would otherwise fail on shape mismatch);
- the graph is pre-processed (shape inference + ORT's basic optimizations)
  before quantization, so tensor names the quantizer sees are the ones that
  survive; only the graph input — whose name never changes — gets an override.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..atomic import atomic_path
from ..errors import UnsupportedModelError
from .bias_correction import correct_conv_biases


class _ImageReader:
    """CalibrationDataReader over an in-memory N×C×H×W array, in the model's input layout."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int, layout: str):
        self.images, self.input_name, self.batch, self.layout = images, input_name, batch, layout
        self.start = 0

    def get_next(self):
        if self.start >= len(self.images):
            return None
        chunk = self.images[self.start:self.start + self.batch]
        self.start += self.batch
        if len(chunk) < self.batch:  # a fixed batch size must be met exactly: repeat images to fill it
            chunk = np.concatenate([chunk, self.images[:self.batch - len(chunk)]])
        if self.layout == "nhwc":
            chunk = chunk.transpose(0, 2, 3, 1)
        return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self):
        self.start = 0


def _input_info(proto: onnx.ModelProto) -> tuple[str, int | None]:
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"the ONNX model has {len(inputs)} inputs; gzsq quantizes single-image-input "
                                    "classifiers")
    dim = inputs[0].type.tensor_type.shape.dim
    first = dim[0].dim_value if dim and dim[0].HasField("dim_value") else None
    return inputs[0].name, first or None


def depthwise_weights(proto: onnx.ModelProto) -> list[str]:
    """Weight initializers of depthwise convolutions (one input channel per group).

    ONNX Runtime runs these with its own depthwise kernel, which widens to 32 bits before
    accumulating, so unlike the u8×s8 GEMM path they cannot saturate on full-range weights.
    """
    consts = {i.name: i for i in proto.graph.initializer}
    names = []
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = consts[node.input[1]].dims
        if group > 1 and len(dims) == 4 and dims[1] == 1 and dims[0] == group:
            names.append(node.input[1])
    return names


def export_onnx_int8(fp32_path: str | Path, out_path: str | Path, calib_images: np.ndarray, *,
                     layout: str = "nchw", input_range: tuple[float, float] | None = None,
                     per_channel: bool = True, reduce_range: bool = True, activations: str = "uint8",
                     depthwise_full_range: bool = True, calibration: str = "minmax",
                     bias_correction: bool = True, weights: str = "int8") -> Path:
    """Quantize `fp32_path` with ONNX Runtime, calibrating on `calib_images` (NCHW, normalized); atomic write.

    With `reduce_range`, depthwise convolutions still get the full int8 weight grid unless
    `depthwise_full_range=False` (see `depthwise_weights`). `calibration`: "minmax" (SPEC's default
    observer) or "percentile" (ONNX Runtime's histogram percentile, 99.999). `bias_correction`
    quantizes twice: once to learn each Conv's rounded weights, then again with the biases
    corrected for the mean shift that rounding causes (`gzsq.export.bias_correction`).
    `weights="uint8"` selects ONNX Runtime's u8×u8 kernels, which widen to 32 bits before adding and
    so take the full grid without saturating, but ran ~6× slower than FP32 on this CPU.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    proto = onnx.load(str(fp32_path))
    input_name, fixed_batch = _input_info(proto)
    # The classifier's logits stay float: an int8 grid over 1000 logits ties and flips the top-1 (measured on
    # EfficientNet-Lite0: quantized logits cost most of the int8 accuracy loss), and nothing downstream wants int8.
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True,
             "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]}
    overrides = {}
    if input_range is not None:
        overrides[input_name] = [{"rmin": np.float32(input_range[0]), "rmax": np.float32(input_range[1])}]
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if calibration not in methods:
        raise ValueError(f"unknown calibration {calibration!r}; choose one of {', '.join(methods)}")
    with tempfile.TemporaryDirectory(dir=out_path.parent if out_path.parent.exists() else None) as work:
        prepared = Path(work) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the file as it is if it fails
            prepared = Path(fp32_path)
        if reduce_range and per_channel and depthwise_full_range:
            # per-channel overrides must name the axis, or ONNX Runtime treats them as per-tensor
            for name in depthwise_weights(onnx.load(str(prepared))):
                overrides[name] = [{"axis": 0, "reduce_range": False}]
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        images = np.asarray(calib_images, np.float32)

        def quantize(source: Path, target: Path) -> None:
            reader = _ImageReader(images, input_name, fixed_batch or 32, layout)
            quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                            weight_type=QuantType.QUInt8 if weights == "uint8" else QuantType.QInt8,
                            calibrate_method=methods[calibration], extra_options=extra)

        if bias_correction:
            first = Path(work) / "first.onnx"
            quantize(prepared, first)
            reader = _ImageReader(images, input_name, fixed_batch or 32, layout)
            feeds = iter(reader.get_next, None)
            corrected, _ = correct_conv_biases(onnx.load(str(prepared)), onnx.load(str(first)), feeds)
            prepared = Path(work) / "corrected.onnx"
            onnx.save(corrected, str(prepared))
        with atomic_path(out_path) as tmp:
            quantize(prepared, tmp)
            result = onnx.load(str(tmp))
            del result.metadata_props[:]
            result.metadata_props.extend(proto.metadata_props)
            onnx.save(result, str(tmp))
    for leftover in Path(".").glob("augmented_model*.onnx"):  # older ORT versions drop this in the cwd
        os.unlink(leftover)
    return out_path


def activation_ranges(int8_path: str | Path) -> dict[str, tuple[float, float]]:
    """Float range [rmin, rmax] each activation QuantizeLinear encodes, read back from the int8 file."""
    proto = onnx.load(str(int8_path))
    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    ranges = {}
    for node in proto.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in consts:
            continue
        scale = consts.get(node.input[1])
        zero = consts.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        zp = int(zero.reshape(-1)[0]) if zero is not None else 0
        info = np.iinfo(zero.dtype) if zero is not None else np.iinfo(np.uint8)
        s = float(scale.reshape(-1)[0])
        ranges[node.input[0]] = ((info.min - zp) * s, (info.max - zp) * s)
    return ranges
