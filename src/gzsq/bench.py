"""`gzsq bench`: how long the main job takes on the machine it runs on, and what the int8 model buys.

One run of `quantize_model` into a temporary folder (so the times are the real
pipeline's: calibration data, FP32 export, int8 quantization), then ONNX Runtime
latency of the FP32 and the int8 file at a few batch sizes, timed interleaved
(fp32, int8, fp32, int8, …) so that machine noise hits both alike, and the
process's peak memory. Shared machines are noisy: trust the ratios more than the
absolute times, and run it with nothing else on the CPU.
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

from . import interrupt
from .export import OnnxClassifier
from .config import CalibrationConfig, EvaluationConfig, QuantizeJob
from .pipeline import fp32_path_for, quantize_model


def time_pair(fp32: OnnxClassifier, int8: OnnxClassifier, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median milliseconds per run of each model on `batch`, measured interleaved after a warm-up."""
    for runner in (fp32, int8):  # the first runs allocate and pick kernels
        for _ in range(3):
            runner.session.run(None, {runner.input_name: batch})
    times: dict[int, list[float]] = {id(fp32): [], id(int8): []}
    for _ in range(repeats):
        interrupt.check("bench")
        for runner in (fp32, int8):
            t = time.perf_counter()
            runner.session.run(None, {runner.input_name: batch})
            times[id(runner)].append(time.perf_counter() - t)
    return statistics.median(times[id(fp32)]) * 1000, statistics.median(times[id(int8)]) * 1000


def peak_memory_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def bench_model(model: nn.Module, calibration: CalibrationConfig = CalibrationConfig(), *,
                batches: tuple[int, ...] = (1, 32), repeats: int = 20, threads: int = 0,
                progress: bool = False) -> dict:
    """Time `gzsq quantize` on `model` and the FP32 vs int8 ONNX Runtime latency; → a plain dict."""
    calibration = calibration.resolved(model)
    job = QuantizeJob(calibration=calibration, evaluation=EvaluationConfig(threads=threads), keep_fp32=True,
                      progress=progress)
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "model-int8.onnx"
        t = time.perf_counter()
        report = quantize_model(model, out, job)
        total = time.perf_counter() - t
        layout = report["input"]["layout"]
        fp32 = OnnxClassifier(fp32_path_for(out), layout=layout, threads=threads)
        int8 = OnnxClassifier(out, layout=layout, threads=threads)
        latency = []
        for size in (fp32.fixed_batch,) if fp32.fixed_batch else batches:  # a fixed batch is the only one it runs
            images = np.random.default_rng(calibration.seed).standard_normal((size, *model.input_spec.shape)).astype(np.float32)
            batch = fp32.feed(images)
            f, q = time_pair(fp32, int8, batch, repeats if size == 1 else max(5, repeats // 3))
            latency.append({"batch": size, "fp32_ms": round(f, 3), "int8_ms": round(q, 3),
                            "speedup": round(f / q, 3)})
    seconds = report["seconds"]
    return {
        "model": report["model"],
        "calib": report["calib"],
        "setting": report["setting"],
        "n_calib": calibration.n_images,
        "seconds": {**seconds, "quantize_total": round(total, 2)},
        "calibration_images_per_s": round(calibration.n_images / max(seconds["calibration_data"], 1e-9), 2),
        "latency": latency,
        "peak_memory_mib": round(peak_memory_mib(), 1),
        "repeats": repeats,
        "threads": threads,
    }
