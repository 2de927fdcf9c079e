"""Does ONNX Runtime compute what a file written from the simulator holds? 8-bit weights on the full grid
against pair-safe grids (`QuantConfig.pair_safe_8bit`), on the CPU this runs on.

    python experiments/sim_export_pair_safe.py > results/sim_export_pair_safe.txt

For each model and scheme the simulation model is quantized twice from the same calibration images (32
Gaussian-noise images: the question is the runtime's arithmetic, not the ranges), once with each weight grid,
written with `export_sim_onnx` and run by ONNX Runtime's optimized session (its default) on the evaluation
images. Printed per row: the simulator's top-1, ONNX Runtime's top-1, and the share of images on which their
predictions are the same. Round to nearest, no reconstruction; one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import onnxruntime
import torch

from gzsq.config import QuantConfig
from gzsq.data import load_eval_set
from gzsq.export.onnx_sim import export_sim_onnx
from gzsq.export.runtime import OnnxClassifier
from gzsq.metrics import agreement, predict, top1
from gzsq.models import load_model
from gzsq.quantization.sim import quantize, with_integer_biases

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assets import CIFAR_TEST, IMAGENET_SAMPLE, WEIGHTS  # noqa: E402

MODELS = {"cifar10-resnet20": CIFAR_TEST, "efficientnet-lite0": IMAGENET_SAMPLE}
SCHEMES = {"W8A8": dict(w_bits=8, a_bits=8), "W4A8, first/last 8-bit": dict(w_bits=4, a_bits=8, first_last_8bit=True)}


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    have = set(flags.split(":", 1)[1].split())
    return ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"# ONNX Runtime {onnxruntime.__version__}, CPU {platform.processor() or platform.machine()}: {cpu_flags()}")
    print(f"# $ python experiments/sim_export_pair_safe.py --models {args.models}")
    for name in args.models.split(","):
        model = load_model(name, weights=WEIGHTS.get(name))
        ev = load_eval_set(model, MODELS[name])
        shape = (32, *ev.images.shape[1:])
        calib = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        for scheme, kw in SCHEMES.items():
            start = QuantConfig.starting_point(kw["w_bits"], kw["a_bits"], first_last_8bit=kw.get("first_last_8bit",
                                                                                                    False))
            for pair_safe in (False, True):
                t = time.perf_counter()
                sim = with_integer_biases(quantize(model, calib, replace(start, pair_safe_8bit=pair_safe)))
                simulated = predict(sim, ev.images)
                with tempfile.TemporaryDirectory() as work:
                    out = Path(work) / "m.onnx"
                    export_sim_onnx(sim, out, model_name=name)
                    runtime = OnnxClassifier(out, threads=1).predict(ev.images.numpy())
                print(json.dumps({"model": name, "images": len(ev.images), "scheme": scheme,
                                  "8-bit weights": "pair-safe" if pair_safe else "full grid",
                                  "simulator_top1": round(top1(simulated, ev.labels), 2),
                                  "onnxruntime_top1": round(top1(runtime, ev.labels), 2),
                                  "runtime_matches_simulator": round(agreement(runtime, simulated), 2),
                                  "seconds": round(time.perf_counter() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
