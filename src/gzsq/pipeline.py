"""The main job, `gzsq quantize`: model in → calibration images from no data → int8 model out + report.

Stages, each timed: calibration images (a registered source, gzsq by default),
then one of two backends, picked by the output's suffix:

- `.onnx`: FP32 ONNX (exported from a zoo model, or the user's own ONNX file as
  it is) → ONNX Runtime static int8 quantization calibrated on those images;
  evaluation runs both files in ONNX Runtime;
- `.pt2`: torchao's PT2E with X86InductorQuantizer (optional extra), saved with
  torch.export; evaluation runs the FP32 module and the converted program.

With a labelled set, FP32-vs-int8 top-1 and agreement are measured on the
backend's own models. The report (`OUT.report.json` + `.md`) holds all of it,
plus every activation range the int8 ONNX file encodes.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

from . import interrupt
from .atomic import write_text_atomic
from .errors import ConfigError
from .evaluate import calib_label, default_setting, load_eval_set
from .export import Int8ExportConfig, OnnxClassifier, activation_ranges, export_fp32_onnx, export_onnx_int8
from .fold import fold_bn
from .sources import SourceOptions, check_source, make_calibration


BACKENDS = {".onnx": "onnxruntime", ".pt2": "pt2e"}


def report_paths(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in BACKENDS else out
    return Path(f"{stem}.report.json"), Path(f"{stem}.report.md")


def default_n_calib(model: nn.Module) -> int:
    return 64 if model.input_spec.size >= 128 else 256


def quantize_model(model: nn.Module, out: str | Path, *, calib: str = "gzsq", preset: str = "default",
                   n_calib: int | None = None, seed: int = 0, setting: str | None = None,
                   calib_data: str | None = None, eval_data: str | None = None, keep_fp32: bool = False,
                   threads: int = 0, full_range_weights: bool = False, bias_correction: bool = True,
                   calib_set: str | None = None,
                   progress: bool = False) -> dict:
    """Write an int8 model of `model` to `out` (.onnx or .pt2) and return the report (also written beside it).

    On any error or Ctrl-C, whatever this call wrote (model, reports, FP32 copy) is removed again."""
    out = Path(out)
    written = [out, *report_paths(out), out.with_name(out.stem + ".fp32.onnx")]
    before = {p: p.exists() for p in written}
    try:
        return _quantize_model(model, out, calib=calib, preset=preset, n_calib=n_calib, seed=seed, setting=setting,
                               calib_data=calib_data, eval_data=eval_data, keep_fp32=keep_fp32, threads=threads,
                               full_range_weights=full_range_weights, bias_correction=bias_correction,
                               calib_set=calib_set, progress=progress)
    except BaseException:
        for path in written:
            if path.exists() and not before[path]:
                path.unlink()
        raise


def _quantize_model(model, out, *, calib, preset, n_calib, seed, setting, calib_data, eval_data, keep_fp32,
                    threads, full_range_weights, bias_correction, calib_set, progress) -> dict:
    backend = BACKENDS.get(out.suffix.lower())
    if backend is None:
        raise ConfigError(f"the output must end in .onnx (ONNX Runtime) or .pt2 (PT2E), got {out.name}")
    # bad evaluation data fails here, before the long work
    eval_set = load_eval_set(model, eval_data, labels_must_fit=False) if eval_data is not None else None
    seconds: dict[str, float] = {}
    setting = setting or default_setting(model)
    if calib_set is None:
        check_source(calib, model, setting)
    n_calib = n_calib or default_n_calib(model)
    layout = getattr(model, "onnx_layout", "nchw")

    t = time.perf_counter()
    if calib_set is not None:  # a set made earlier by `gzsq distill`: distill once, quantize many times
        calibration = load_calibration_for(model, calib_set)
        calibration.log["calib_set"] = str(calib_set)
        meta = calibration.log.get("meta", {})
        calib, n_calib, seed = calibration.source, len(calibration.images), calibration.seed
        preset = meta.get("preset", "") if calib == "gzsq" else ""
        setting = meta.get("setting", setting)
    else:
        seen = model if setting == "bn" else fold_bn(model)
        options = SourceOptions(setting=setting, calib_data=calib_data, preset=preset, progress=progress)
        calibration = make_calibration(calib, seen, n_calib, seed=seed, options=options)
    seconds["calibration_data"] = time.perf_counter() - t

    if backend == "pt2e":
        return _finish(model, out, _run_pt2e(model, out, calibration, eval_set, seconds, progress), calibration,
                       seconds, setting=setting, calib=calib, preset=preset, n_calib=n_calib, seed=seed, layout="nchw")
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as work:
        t = time.perf_counter()
        if getattr(model, "onnx_path", None):
            fp32_path = Path(model.onnx_path)
        else:  # exported straight to OUT.fp32.onnx when it is kept: one atomic write, no copy
            fp32_path = export_fp32_onnx(model, out.with_name(out.stem + ".fp32.onnx") if keep_fp32
                                         else Path(work) / "fp32.onnx")
        seconds["export_fp32"] = time.perf_counter() - t
        interrupt.check()  # the exporter cannot be interrupted: act on a Ctrl-C right after it

        t = time.perf_counter()
        export_onnx_int8(fp32_path, out, calibration.images.numpy(),
                         Int8ExportConfig(reduce_range=not full_range_weights, bias_correction=bias_correction),
                         layout=layout, input_range=model.input_spec.input_range())
        seconds["quantize_int8"] = time.perf_counter() - t

        evaluation = None
        if eval_set is not None:
            t = time.perf_counter()
            evaluation = _evaluate_onnx(fp32_path, out, eval_set, layout, threads, progress)
            seconds["evaluate"] = time.perf_counter() - t

    return _finish(model, out, evaluation, calibration, seconds, setting=setting, calib=calib, preset=preset,
                   n_calib=n_calib, seed=seed, layout=layout, full_range=full_range_weights,
                   bias_correction=bias_correction)


FORMATS = {
    "onnxruntime": "ONNX QDQ: int8 weights (symmetric, per output channel), uint8 activations (asymmetric, "
                   "per tensor), min/max ranges, float logits; runs in ONNX Runtime",
    "pt2e": "torch.export program from torchao PT2E (X86InductorQuantizer defaults: int8 weights per channel, "
            "uint8 activations per tensor); load with torch.export.load, run int8 kernels with torch.compile",
}


def _run_pt2e(model, out, calibration, eval_set, seconds, progress):
    from .evaluate import predict
    from .export.pt2e import quantize_pt2e, save_pt2e

    t = time.perf_counter()
    converted = quantize_pt2e(model, calibration.images)
    save_pt2e(converted, calibration.images, out)
    seconds["quantize_int8"] = time.perf_counter() - t
    if eval_set is None:
        return None
    t = time.perf_counter()
    fp32 = predict(model, eval_set.images, progress=progress, desc="fp32 (torch)")
    int8 = predict(converted, eval_set.images, progress=progress, desc="int8 (pt2e, eager)")
    seconds["evaluate"] = time.perf_counter() - t
    return _metrics(eval_set, fp32, int8, n_outputs=None)


def _finish(model, out, evaluation, calibration, seconds, *, setting, calib, preset, n_calib, seed, layout,
            full_range=False, bias_correction=False) -> dict:
    backend = BACKENDS[out.suffix.lower()]
    fmt = FORMATS[backend]
    if backend == "onnxruntime":
        fmt += ("; weights on the full [-127, 127] grid" if full_range else
                "; weight grids safe for CPUs without VNNI (whose u8xs8 kernels add pairs in 16 bits): depthwise convs "
                "on the full [-127, 127] grid (their kernel widens to 32 bits), other convs per channel on the finest "
                "grid whose neighbouring-pair sums cannot saturate, the classifier on ONNX Runtime's reduce_range "
                "[-64, 64]")
        if bias_correction:
            fmt += "; conv biases corrected for the mean shift of weight rounding"
    ranges = activation_ranges(out) if backend == "onnxruntime" else {}
    report = {
        "model": getattr(model, "gzsq_name", type(model).__name__),
        "output": str(out),
        "backend": backend,
        "format": fmt,
        "input": {"layout": layout, "size": model.input_spec.size, "mean_0to1": list(model.input_spec.mean),
                  "std_0to1": list(model.input_spec.std), "channel_order": model.input_spec.channel_order},
        "setting": setting,
        "calib": calib_label(calib, preset),
        "calib_set": calibration.log.get("calib_set"),
        "n_calib": n_calib,
        "seed": seed,
        "distill": {k: calibration.log[k] for k in ("iterations", "final_loss", "stopped_early")
                    if k in calibration.log},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "activation_ranges": {name: [round(lo, 6), round(hi, 6)] for name, (lo, hi) in ranges.items()},
        "evaluation": evaluation,
    }
    json_path, md_path = report_paths(out)
    write_text_atomic(json_path, json.dumps(report, indent=1) + "\n")
    write_text_atomic(md_path, render_report(report))
    return report


def load_calibration_for(model: nn.Module, path: str | Path):
    """A saved calibration set, checked against the model's input shape."""
    from .distill.io import load_calibration
    from .errors import DataError

    calibration = load_calibration(path)
    if tuple(calibration.images.shape[1:]) != tuple(model.input_spec.shape):
        raise DataError(f"{path} holds {tuple(calibration.images.shape[1:])} images but the model takes "
                        f"{tuple(model.input_spec.shape)}: distill the set from this model")
    return calibration


def _evaluate_onnx(fp32_path, int8_path, eval_set, layout, threads, progress) -> dict:
    images = eval_set.images.numpy()
    fp32_logits = OnnxClassifier(fp32_path, layout=layout, threads=threads).logits(
        images, progress=progress, desc="fp32 (onnxruntime)")
    int8 = OnnxClassifier(int8_path, layout=layout, threads=threads).predict(
        images, progress=progress, desc="int8 (onnxruntime)")
    return _metrics(eval_set, fp32_logits.argmax(1), int8, n_outputs=fp32_logits.shape[1])


def _metrics(eval_set, fp32: np.ndarray, int8: np.ndarray, n_outputs: int | None) -> dict:
    labels = eval_set.labels
    result = {"data": eval_set.path, "images": int(len(fp32)), "preprocessing": eval_set.preprocessing,
              "agreement": round(float((fp32 == int8).mean() * 100), 2)}
    if len(labels) and (n_outputs is None or int(labels.max()) < n_outputs):
        result["fp32_top1"] = round(float((fp32 == labels).mean() * 100), 2)
        result["int8_top1"] = round(float((int8 == labels).mean() * 100), 2)
    else:  # e.g. a 2-class model evaluated on ImageNet images: only agreement means something
        result["note"] = (f"the labels (up to {int(labels.max())}) do not index this model's "
                          f"{n_outputs} outputs: agreement only")
    return result


def render_report(r: dict) -> str:
    lines = [f"# gzsq quantize report: {r['model']}", "",
             f"- output: `{r['output']}` ({r['format']})",
             f"- input: {r['input']['layout'].upper()}, {r['input']['size']}×{r['input']['size']}, "
             f"{r['input']['channel_order'].upper()}, (pixel/255 − {_fmt(r['input']['mean_0to1'])}) / "
             f"{_fmt(r['input']['std_0to1'])}",
             f"- calibration: {r['n_calib']} images from `{r['calib']}` (setting {r['setting']}, seed {r['seed']})"
             + (f", distillation {r['distill']}" if r["distill"] else ""),
             "- seconds: " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()), ""]
    e = r.get("evaluation")
    if e:
        runtime = "ONNX Runtime" if r["backend"] == "onnxruntime" else "PyTorch, PT2E program run eagerly"
        lines += [f"## Accuracy ({runtime}: FP32 model vs int8 model)", "",
                  f"on `{e['data']}` ({e['images']} images; {e['preprocessing']})", "", "| | value |",
                  "| --- | --- |"]
        if "fp32_top1" in e:
            lines += [f"| FP32 top-1 | {e['fp32_top1']:.2f} % |", f"| int8 top-1 | {e['int8_top1']:.2f} % |",
                      f"| Δ | {e['int8_top1'] - e['fp32_top1']:+.2f} pt |"]
        lines += [f"| top-1 agreement | {e['agreement']:.2f} % |", ""]
        if "note" in e:
            lines += [e["note"], ""]
    if not r["activation_ranges"]:
        return "\n".join(lines) + "\n"
    lines += ["## Activation ranges in the int8 model", "", "| tensor | min | max |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {lo:.4g} | {hi:.4g} |" for name, (lo, hi) in r["activation_ranges"].items()]
    return "\n".join(lines) + "\n"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
