"""Run an ONNX classifier (FP32 or int8) in ONNX Runtime on gzsq's NCHW tensors.

gzsq keeps images as normalized N×C×H×W float tensors; a deployment model may
want N×H×W×C (TensorFlow/Caffe exports). `OnnxClassifier` does that transpose,
and honours a fixed batch dimension by feeding exactly that many images at a
time (padding the last batch), which many exported files have.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from .. import interrupt
from ..errors import ModelLoadError


@contextlib.contextmanager
def session_threads(threads: int):
    """Inside the block, every `onnxruntime.SessionOptions()` starts with `threads` intra-op threads (0: ONNX
    Runtime's default, one per core). ONNX Runtime's own tools (quantize_static's calibrator, its pre-processing)
    build their sessions from plain `SessionOptions()` and take no thread count, so `--threads` reaches them only
    this way; a job that shares the cores would otherwise oversubscribe them during the int8 export."""
    if not threads:
        yield
        return
    original = ort.SessionOptions

    class Threaded(original):
        def __init__(self):
            super().__init__()
            self.intra_op_num_threads = threads
            self.inter_op_num_threads = 1

    ort.SessionOptions = Threaded
    try:
        yield
    finally:
        ort.SessionOptions = original


def _session(path: str, threads: int, reference: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise to a user
    if reference:  # no graph optimizations: Q/DQ nodes run as float ops, not fused into int8 kernels
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {first[:300]}") from None


class OnnxClassifier:
    """An ONNX Runtime session plus the layout of its image input.

    `reference=True` runs a QDQ model as ONNX Runtime's float reference of its own int8 graph
    (what the fused kernels should compute), to tell kernel saturation from quantization error.
    """

    def __init__(self, path, *, layout: str = "nchw", threads: int = 0, reference: bool = False):
        self.path = str(path)
        self.layout = layout
        self.session = _session(self.path, threads, reference)
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        first = meta.shape[0] if meta.shape else None
        self.fixed_batch = first if isinstance(first, int) and first > 0 else None

    def feed(self, images: np.ndarray) -> np.ndarray:
        """NCHW float → what the session's input wants."""
        images = np.asarray(images, dtype=np.float32)
        return np.ascontiguousarray(images.transpose(0, 2, 3, 1)) if self.layout == "nhwc" else images

    def logits(self, images, *, batch_size: int = 64, progress: bool = False, desc: str = "onnxruntime") -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        step = self.fixed_batch or batch_size
        out = []
        for start in tqdm(range(0, len(images), step), desc=desc, disable=not progress, leave=False):
            interrupt.check("onnx-evaluate")
            chunk = images[start:start + step]
            n = len(chunk)
            if self.fixed_batch and n < step:  # pad the last batch to the fixed size, drop the padding after
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
            out.append(self.session.run(None, {self.input_name: self.feed(chunk)})[0][:n])
        return np.concatenate(out)

    def predict(self, images, **kwargs) -> np.ndarray:
        return self.logits(images, **kwargs).argmax(1)
