"""FP32 ONNX → int8 ONNX (QDQ) with ONNX Runtime's static quantizer, calibrated on gzsq's images.

The scheme follows the simulator's (docs/how-it-works.md §3) as ONNX Runtime can express it: weights int8
symmetric per output channel, activations uint8 asymmetric per tensor, ranges
from min/max over the calibration set, logits left float.

Weight grids are chosen so the fused int8 kernels compute what the QDQ graph
says. On x86 CPUs without VNNI (AVX2 only) ONNX Runtime's u8×s8
kernels sum pairs of neighbouring products in 16 bits, and with full-range weights
those sums saturate (results/onnx_int8_diagnostics.txt, results/lite0_int8_gap.txt:
on EfficientNet-Lite0 the fused model then disagreed with its own QDQ reference on
~10 % of images). ONNX Runtime's answer, `reduce_range` ([−64, 64]), costs a bit of
weight precision everywhere. gzsq instead gives each conv output channel the finest
grid on which no neighbouring pair can overflow (`pair_safe_weight_ranges`, never
coarser than reduce_range), keeps depthwise convs (32-bit kernel) on the full
grid, and leaves only the classifier on reduce_range. u8 activations with s8
weights are the fast path here: 1.3–1.7× faster than FP32 (benchmarks/results/latency.txt),
where s8×s8 was slower than FP32. Use `Int8ExportConfig(reduce_range=False)` on CPUs with VNNI or
ARM dot-product instructions. `activations="int8"` with full-range weights
reproduces the full 8-bit grid exactly on ResNet-20 (fused kernels = QDQ reference);
the simulator-agreement test uses it.
The network input's range is not calibrated but set to the model's valid pixel
range (as in the simulated model), injected through `TensorQuantOverrides`.

Two pitfalls are handled here rather than left to the user:
- a model with a fixed batch dimension gets calibration batches of exactly
  that size (ONNX Runtime would otherwise fail on shape mismatch);
- the graph is pre-processed (shape inference + ORT's basic optimizations)
  before quantization, and every override (the input's range, per-channel
  weight grids) names tensors of that pre-processed graph, the one the
  quantizer sees.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from .. import interrupt
from ..atomic import atomic_path
from ..config import Int8ExportConfig
from ..errors import ConfigError, UnsupportedModelError
from ..quantization.primitives import same_sign_pair_sums
from .bias_correction import correct_conv_biases
from .runtime import session_threads


class ImageReader:
    """CalibrationDataReader over an in-memory N×C×H×W array, in the model's input layout."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int, layout: str):
        self.images, self.input_name, self.batch, self.layout = images, input_name, batch, layout
        self.start = 0

    def get_next(self):
        # ONNX Runtime's calibration loop calls this between batches: the safe point for Ctrl-C inside it
        interrupt.check("int8-calibration")
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


def clip_bounds(proto: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """Output tensor → (min, max) of every Clip with constant bounds (ReLU6 exports as Clip(0, 6)).

    A bounded activation's range is known from the architecture: ReLU6 was chosen for mobile networks so
    that an 8-bit grid over [0, 6] fits it whatever the data. Distilled images often leave the deepest
    ReLU6 outputs short of 6 (results/fidelity/), and a range calibrated on them clips real images there."""
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    bounds = {}
    for node in proto.graph.node:
        if node.op_type != "Clip":
            continue
        attrs = {a.name: a.f for a in node.attribute}
        lo = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("min")
        hi = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("max")
        if lo is None or hi is None:
            continue
        lo, hi = float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            bounds[node.output[0]] = (lo, hi)
    return bounds


def widen_ranges(cache: Path, margin: float, bounds: dict[str, tuple[float, float]], keep: set[str]) -> None:
    """Scale every range in ONNX Runtime's calibration cache `cache` away from zero by `margin`, in place.

    A side that is zero stays zero (a ReLU output keeps its grid's zero exactly), a Clip's output stays
    within the Clip's bounds, and the tensors in `keep` (the network input, whose range is known) are left."""
    from onnxruntime.quantization.calibrate import TensorData, load_tensors_data, save_tensors_data

    tensors = load_tensors_data(cache)
    for name in list(tensors.keys()):
        if name in keep:
            continue
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in tensors[name].range_value)
        lo, hi = min(lo, 0.0) * margin + max(lo, 0.0), max(hi, 0.0) * margin + min(hi, 0.0)
        if name in bounds:
            lo, hi = max(lo, bounds[name][0]), min(hi, bounds[name][1])
        tensors[name] = TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
    save_tensors_data(tensors, cache)


def pair_safe_weight_ranges(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Per-output-channel weight range (± r) for each non-depthwise Conv that cannot saturate u8×s8 kernels.

    Without VNNI, ONNX Runtime's u8×s8 GEMM adds the products of two neighbouring weights in 16 bits:
    a·q_k + a'·q_k+1 with activations a, a' ≤ 255. Opposite signs never overflow; same signs stay
    ≤ 32 767 when |q_k| + |q_k+1| ≤ 128. With r = max(max |w|, largest same-sign pair |w_k| + |w_k+1|)
    and scale r / 127, rounding adds at most 1 to a pair's 127, so every pair is safe, and the grid
    is never coarser than reduce_range's (r ≤ 2·max |w| ⇔ scale ≤ max |w| / 63.5). The pairs:
    `same_sign_pair_sums`, which the simulator's pair-safe 8-bit grids use too.
    """
    consts = {i.name: i for i in proto.graph.initializer}
    ranges = {}
    depthwise = set(depthwise_weights(proto))
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in consts or node.input[1] in depthwise:
            continue
        w = numpy_helper.to_array(consts[node.input[1]]).astype(np.float64)
        if w.ndim != 4:
            continue
        r = np.maximum(np.abs(w).reshape(len(w), -1).max(axis=1), same_sign_pair_sums(torch.from_numpy(w)).numpy())
        ranges[node.input[1]] = r
    return ranges


def export_onnx_int8(fp32_path: str | Path, out_path: str | Path, calib_images: np.ndarray,
                     config: Int8ExportConfig = Int8ExportConfig(), *, layout: str = "nchw",
                     input_range: tuple[float, float] | None = None, threads: int = 0) -> Path:
    """Quantize `fp32_path` with ONNX Runtime, calibrating on `calib_images` (NCHW, normalized); atomic write.

    `layout` is the graph input's layout ("nchw" or "nhwc"); `input_range`, the network input's
    valid range, replaces its calibrated range. `threads`: ONNX Runtime's intra-op threads for every session the
    export opens (0: its default). With bias correction the graph is quantized
    twice: once (on a single batch) to learn each Conv's rounded weights, then again with the
    biases corrected for the mean shift that rounding causes.
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
    with session_threads(threads), tempfile.TemporaryDirectory(
            dir=out_path.parent if out_path.parent.exists() else None) as work:
        prepared = Path(work) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the file as it is if it fails
            prepared = Path(fp32_path)
        interrupt.check()  # pre-processing cannot be interrupted: act on a Ctrl-C right after it
        prepared_proto = onnx.load(str(prepared))
        if config.reduce_range and config.per_channel and config.depthwise_full_range:
            # per-channel overrides must name the axis, or ONNX Runtime treats them as per-tensor
            for name in depthwise_weights(prepared_proto):
                overrides[name] = [{"axis": 0, "reduce_range": False}]
        if config.reduce_range and config.per_channel and config.pair_safe:
            for name, r in pair_safe_weight_ranges(prepared_proto).items():
                overrides[name] = [{"axis": 0, "reduce_range": False, "rmin": np.float32(-v), "rmax": np.float32(v)}
                                   for v in r]
        if config.clip_ranges:
            for name, (lo, hi) in clip_bounds(prepared_proto).items():
                overrides[name] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        images = np.asarray(calib_images, np.float32)

        def quantize(source: Path, target: Path, images: np.ndarray, ranges: Path | None = None) -> None:
            reader = ImageReader(images, input_name, fixed_batch or 32, layout)
            cache = {} if ranges is None else {"calibration_cache_path": str(ranges)}
            with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print progress to stdout
                quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                                per_channel=config.per_channel, reduce_range=config.reduce_range,
                                activation_type=QuantType.QUInt8 if config.activations == "uint8" else QuantType.QInt8,
                                weight_type=QuantType.QUInt8 if config.weights == "uint8" else QuantType.QInt8,
                                calibrate_method=methods[config.calibration], extra_options=extra, **cache)

        if config.bias_correction:
            # The first pass is only read for its rounded weights, which no activation range affects:
            # one batch of calibration images is enough, and saves a full calibration.
            first = Path(work) / "first.onnx"
            quantize(prepared, first, images[: fixed_batch or 2])
            reader = ImageReader(images, input_name, fixed_batch or 32, layout)
            feeds = iter(reader.get_next, None)
            corrected, _ = correct_conv_biases(prepared_proto, onnx.load(str(first)), feeds)
            prepared = Path(work) / "corrected.onnx"
            onnx.save(corrected, str(prepared))
        ranges = None
        if config.range_margin != 1.0:
            if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
                raise ConfigError("range_margin needs an ONNX Runtime whose quantize_static takes "
                                  "calibration_cache_path (1.32 has it)")
            # ONNX Runtime caches the calibrated ranges in a JSON file and reads them back when the file exists:
            # calibrate once into it, widen what it holds, and quantize from it.
            ranges = Path(work) / "ranges.json"
            quantize(prepared, Path(work) / "calibrated.onnx", images, ranges)
            widen_ranges(ranges, config.range_margin, clip_bounds(prepared_proto), keep={input_name})
        with atomic_path(out_path) as tmp:
            quantize(prepared, tmp, images, ranges)
            result = onnx.load(str(tmp))
            del result.metadata_props[:]
            result.metadata_props.extend(proto.metadata_props)
            onnx.save(result, str(tmp))
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
