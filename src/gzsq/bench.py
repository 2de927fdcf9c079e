"""`gzsq bench`: how long the main job takes on this machine, and what the int8 model buys (SPEC §7).

One run of `quantize_model` into a temporary folder (so the times are the real
pipeline's: calibration data, FP32 export, int8 quantization), then ONNX Runtime
latency of the FP32 and the int8 file at a few batch sizes, timed interleaved
(fp32, int8, fp32, int8, …) so that machine noise hits both alike, and the
process's peak memory. Machines here are noisy: trust the ratios more than the
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
from .pipeline import default_n_calib, quantize_model


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


def bench_model(model: nn.Module, *, calib: str = "gzsq", preset: str = "default", n_calib: int | None = None,
                seed: int = 0, setting: str | None = None, calib_data: str | None = None,
                batches: tuple[int, ...] = (1, 32), repeats: int = 20, threads: int = 0,
                progress: bool = False) -> dict:
    """Time `gzsq quantize` on `model` and the FP32 vs int8 ONNX Runtime latency; → a plain dict."""
    n_calib = n_calib or default_n_calib(model)
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "model-int8.onnx"
        t = time.perf_counter()
        report = quantize_model(model, out, calib=calib, preset=preset, n_calib=n_calib, seed=seed, setting=setting,
                                calib_data=calib_data, keep_fp32=True, threads=threads, progress=progress)
        total = time.perf_counter() - t
        layout = report["input"]["layout"]
        fp32 = OnnxClassifier(out.with_name(out.stem + ".fp32.onnx"), layout=layout, threads=threads)
        int8 = OnnxClassifier(out, layout=layout, threads=threads)
        latency = []
        for size in (fp32.fixed_batch,) if fp32.fixed_batch else batches:  # a fixed batch is the only one it runs
            images = np.random.default_rng(seed).standard_normal((size, *model.input_spec.shape)).astype(np.float32)
            batch = fp32.feed(images)
            f, q = time_pair(fp32, int8, batch, repeats if size == 1 else max(5, repeats // 3))
            latency.append({"batch": size, "fp32_ms": round(f, 3), "int8_ms": round(q, 3),
                            "speedup": round(f / q, 3)})
    seconds = report["seconds"]
    return {
        "model": report["model"],
        "calib": report["calib"],
        "setting": report["setting"],
        "n_calib": n_calib,
        "seconds": {**seconds, "quantize_total": round(total, 2)},
        "calibration_images_per_s": round(n_calib / max(seconds["calibration_data"], 1e-9), 2),
        "latency": latency,
        "peak_memory_mib": round(peak_memory_mib(), 1),
        "repeats": repeats,
        "threads": threads,
    }
