"""The user-level jobs: `gzsq quantize` (model in → calibration images from no data → int8 model out +
report) and `gzsq distill` (a calibration set made once and saved).

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

Both jobs check their outputs before any work (`check_quantize_outputs`,
`check_distill_outputs`), write atomically and leave nothing behind on an error
or Ctrl-C (`distill_set` keeps its resumable OUT.partial).
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from . import distributed, interrupt
from .atomic import atomic_path, ensure_output_path, write_text_atomic
from .config import DistillJob, ImagesFor, QuantizeJob
from .distillation.checkpoint import Checkpoint
from .data import load_eval_set
from .errors import ConfigError, DistillationDivergedError, ModelLoadError, OutputError, RunInterrupted
from .export import OnnxClassifier, activation_ranges, export_fp32_onnx, export_onnx_int8
from .export.onnx_sim import encodings_path_for
from .interrupt import describe
from .metrics import agreement, predict, top1
from .partial import Partial, Saved, job_key, partial_path
from .models.validate import model_name
from .sources import Calibration, calibrate, check_calibration
from .sources.saved import save_calibration, save_preview

BACKENDS = {".onnx": "onnxruntime", ".pt2": "pt2e"}


def backend_for(out: str | Path) -> str:
    """The backend an output's suffix picks; anything else is a one-line error."""
    backend = BACKENDS.get(Path(out).suffix.lower())
    if backend is None:
        raise ConfigError(f"the output must end in .onnx (ONNX Runtime) or .pt2 (PyTorch PT2E), got {Path(out).name}")
    return backend


def report_paths(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in BACKENDS else out
    return Path(f"{stem}.report.json"), Path(f"{stem}.report.md")


def fp32_path_for(out: str | Path) -> Path:
    """Where `keep_fp32` writes the FP32 ONNX export beside OUT: OUT.fp32.onnx."""
    out = Path(out)
    return out.with_name(out.stem + ".fp32.onnx")


def output_paths(out: str | Path, job: QuantizeJob) -> list[Path]:
    """Every file the job writes (the model, its two reports, its encodings when written from the
    simulator, the FP32 copy when kept)."""
    return [Path(out), *report_paths(out), *([encodings_path_for(out)] if job.from_simulator else []),
            *([fp32_path_for(out)] if job.keep_fp32 else [])]


def check_quantize_outputs(out: str | Path, job: QuantizeJob, *, force: bool = False) -> None:
    """Before any work: a known suffix, and every output writable and not there already (unless `force`);
    an interrupted reconstruction's OUT.partial needs a decision (resume or force)."""
    if backend_for(out) != "onnxruntime" and job.from_simulator:
        raise ConfigError("bits below 8 and reconstruction are written as ONNX: give an output ending in .onnx")
    if job.resume and job.reconstruction is None:
        raise ConfigError("--resume continues an interrupted reconstruction, and this job has none (it runs below "
                          "8 bits or with --reconstruct)")
    if job.resume and distributed.active():
        raise ConfigError("--resume continues a one-process run; rerun it without torchrun")
    for path in output_paths(out, job):  # all refused before any work, not half-way
        ensure_output_path(path, force=force)
    partial = partial_path(out)
    if job.reconstruction is not None and partial.exists() and not (job.resume or force):
        raise OutputError(f"{partial} holds an interrupted reconstruction: pass --resume to continue it or --force "
                          "to start over")


def quantize_model(model: nn.Module, out: str | Path, job: QuantizeJob = QuantizeJob(), *,
                   force: bool = False) -> dict:
    """Write an int8 model of `model` to `out` (.onnx or .pt2) and return the report (also written beside it).

    On any error or Ctrl-C, whatever this call wrote (model, reports, FP32 copy) is removed again."""
    check_quantize_outputs(out, job, force=force)
    out = Path(out)
    written = [out, *report_paths(out), encodings_path_for(out), fp32_path_for(out)]
    before = {p: p.exists() for p in written}

    def remove_new_outputs():
        for path in written:
            if path.exists() and not before[path]:
                path.unlink()

    # a source that cannot run fails here, before the long work; checked once, used by the key and the job
    calibration_config = check_calibration(model, job.calibration, ImagesFor.job(job.quant, job.reconstruction))
    partial = None
    if job.reconstruction is not None and not distributed.active():
        partial = Partial(out, job_key(model, job, calibration_config))
        if force and not job.resume:
            partial.path.unlink(missing_ok=True)  # --force starts over
    had_partial = partial is not None and partial.path.exists()
    try:
        report = _quantize_model(model, out, job, calibration_config, partial)
    except KeyboardInterrupt as exc:
        remove_new_outputs()
        if partial is None or not partial.path.exists():
            raise
        signum = getattr(exc, "signum", signal.SIGINT)
        learned = (f"{partial.units_done} of {partial.total_units} units learned" if partial.units_done
                   else "the calibration images; no unit finished yet")
        raise RunInterrupted(f"{describe(signum)} before {out} was written; {partial.path} keeps the progress "
                             f"({learned}): rerun the same command with --resume to continue", signum) from None
    except BaseException:
        remove_new_outputs()
        if partial is not None and not had_partial:
            partial.path.unlink(missing_ok=True)
        raise
    if partial is not None:
        partial.path.unlink(missing_ok=True)
    distributed.barrier()  # under torchrun: rank 0 has written everything; the others waited here
    return report


def _quantize_model(model: nn.Module, out: Path, job: QuantizeJob, calibration_config,
                    partial: Partial | None = None) -> dict:
    # bad evaluation data fails here, before the long work
    data = job.evaluation.data
    eval_set = load_eval_set(model, data, labels_must_fit=False) if data is not None else None
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    saved = partial.load() if partial is not None and job.resume else None
    if saved is not None:  # the interrupted run's images: no second distillation
        calibration = saved.calibration
        calibration.log["resumed_from"] = str(partial.path)
        calibration.log["units_resumed"] = saved.units_done
    else:
        calibration = calibrate(model, calibration_config, progress=job.progress)
    seconds["calibration_data"] = time.perf_counter() - t
    if calibration_config.saved_set is not None:  # a set made by `gzsq distill`: its own settings apply
        meta = calibration.log.get("meta", {})
        calibration.log["calib_set"] = str(calibration_config.saved_set)
        calibration_config = replace(calibration_config, source=calibration.source,
                                     n_images=len(calibration.images), seed=calibration.seed,
                                     preset=meta.get("preset", "") if calibration.source == "gzsq" else "",
                                     setting=meta.get("setting", calibration_config.setting))

    if job.from_simulator:
        return _quantize_from_simulator(model, out, job, calibration, calibration_config, eval_set, seconds,
                                        partial, saved)
    if not distributed.is_main():  # under torchrun the other ranks share the distillation only
        return None
    with distributed.solo():
        return _quantize_int8(model, out, job, calibration, calibration_config, eval_set, seconds)


def _quantize_int8(model, out: Path, job: QuantizeJob, calibration, calibration_config, eval_set, seconds) -> dict:
    backend = backend_for(out)
    if backend == "pt2e":
        evaluation = _run_pt2e(model, out, calibration, eval_set, seconds, job.progress)
        return _finish(model, out, job, evaluation, calibration, calibration_config, seconds, layout="nchw")
    layout = getattr(model, "onnx_layout", "nchw")
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as work:
        t = time.perf_counter()
        fp32_path = _fp32_onnx(model, out, job, work)
        seconds["export_fp32"] = time.perf_counter() - t
        interrupt.check()  # the exporter cannot be interrupted: act on a Ctrl-C right after it

        t = time.perf_counter()
        export_onnx_int8(fp32_path, out, calibration.images.numpy(), job.export, layout=layout,
                         input_range=model.input_spec.input_range(), threads=job.evaluation.threads)
        seconds["quantize_int8"] = time.perf_counter() - t

        evaluation = None
        if eval_set is not None:
            t = time.perf_counter()
            evaluation = _evaluate_onnx(fp32_path, out, eval_set, layout, job.evaluation.threads, job.progress)
            seconds["evaluate"] = time.perf_counter() - t

    return _finish(model, out, job, evaluation, calibration, calibration_config, seconds, layout=layout)


def _fp32_onnx(model: nn.Module, out: Path, job: QuantizeJob, work: str) -> Path:
    """The FP32 ONNX model: the user's own file, or the export, written straight to OUT.fp32.onnx when it is
    kept (one atomic write, no copy)."""
    if getattr(model, "onnx_path", None):
        return Path(model.onnx_path)
    return export_fp32_onnx(model, fp32_path_for(out) if job.keep_fp32 else Path(work) / "fp32.onnx")


def _quantize_from_simulator(model, out: Path, job: QuantizeJob, calibration, calibration_config, eval_set,
                             seconds, partial: Partial | None = None, saved: Saved | None = None) -> dict:
    """Simulation model (+ reconstruction) → ONNX QDQ holding exactly its encodings; evaluated by ONNX
    Runtime and by the simulator on the same images, so the report shows that they agree."""
    from .quantization.sim import quantize as simulate
    from .reconstruct import reconstruct

    t = time.perf_counter()
    sim = simulate(model, calibration.images, job.simulated_scheme, progress=job.progress)
    seconds["ranges"] = time.perf_counter() - t
    if job.reconstruction is not None:
        t = time.perf_counter()
        progress, on_unit = (saved.progress if saved else None), None
        if partial is not None:
            partial.save(calibration, progress)  # the images are kept from here on
            on_unit = lambda state: partial.save(calibration, state)  # noqa: E731
        sim = reconstruct(model, sim, calibration.images, job.reconstruction, seed=calibration_config.seed,
                          progress=job.progress, resume=progress, on_unit=on_unit)
        seconds["reconstruct"] = time.perf_counter() - t
    if not distributed.is_main():  # under torchrun the other ranks share distillation and reconstruction
        return None
    with distributed.solo():
        return _export_and_measure(model, out, job, sim, calibration, calibration_config, eval_set, seconds)


def _export_and_measure(model, out: Path, job: QuantizeJob, sim, calibration, calibration_config, eval_set,
                        seconds) -> dict:
    from .export.onnx_sim import export_sim_onnx
    from .quantization.sim import with_integer_biases

    sim = with_integer_biases(sim)
    t = time.perf_counter()
    encodings = export_sim_onnx(sim, out, model_name=model_name(model))
    seconds["export"] = time.perf_counter() - t
    interrupt.check()
    runtime, runtime_error = None, None
    try:  # loaded once: whether ONNX Runtime runs the file, and (with --eval-data) the session that measures it
        runtime = OnnxClassifier(out, threads=job.evaluation.threads)
    except ModelLoadError as exc:  # still a valid file with its encodings: say so, measure with the simulator
        runtime_error = str(exc)
    evaluation = None
    if eval_set is not None:
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=out.parent) as work:
            fp32_path = _fp32_onnx(model, out, job, work)
            layout = getattr(model, "onnx_layout", "nchw")
            images = eval_set.images.numpy()
            fp32_logits = OnnxClassifier(fp32_path, layout=layout, threads=job.evaluation.threads).logits(
                images, progress=job.progress, desc="fp32 (onnxruntime)")
        n_outputs = fp32_logits.shape[1]
        fp32 = fp32_logits.argmax(1)
        simulated = predict(sim, eval_set.images, progress=job.progress, desc="simulator")
        if runtime is not None:
            quantized = runtime.predict(images, progress=job.progress, desc="quantized (onnxruntime)")
            evaluation = _metrics(eval_set, fp32, quantized, n_outputs)
            evaluation["runtime_matches_simulator"] = round(agreement(quantized, simulated), 2)
        else:
            evaluation = _metrics(eval_set, fp32, simulated, n_outputs)
            evaluation["measured_by"] = "simulator (ONNX Runtime cannot run the file)"
        sim_metrics = _metrics(eval_set, fp32, simulated, n_outputs)
        evaluation["simulator_agreement"] = sim_metrics["agreement"]
        if "int8_top1" in sim_metrics:
            evaluation["simulator_top1"] = sim_metrics["int8_top1"]
        seconds["evaluate"] = time.perf_counter() - t
    elif job.keep_fp32:
        _fp32_onnx(model, out, job, "")
    return _finish(model, out, job, evaluation, calibration, calibration_config, seconds, layout="nchw",
                   encodings=encodings, runtime_error=runtime_error)


FORMATS = {
    "onnxruntime": "ONNX QDQ: int8 weights (symmetric, per output channel), uint8 activations (asymmetric, "
                   "per tensor), min/max ranges, float logits; runs in ONNX Runtime",
    "pt2e": "torch.export program from torchao PT2E (X86InductorQuantizer defaults: int8 weights per channel, "
            "uint8 activations per tensor); load with torch.export.load, run int8 kernels with torch.compile",
}


def _run_pt2e(model, out, calibration, eval_set, seconds, progress):
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


def _simulator_format(job: QuantizeJob, encodings: dict) -> str:
    q = job.simulated_scheme
    bits = sorted({w["bits"] for w in encodings["weights"].values()})
    a_bits = sorted({a["bits"] for a in encodings["activations"].values()})
    method = {None: "rounded to nearest", "block": "rounding and step sizes learned block by block",
              "adaround": "rounding and step sizes learned layer by layer"}[getattr(job.reconstruction, "method", None)]
    pair_safe = ("; 8-bit ones on grids whose neighbouring-pair sums cannot saturate"
                 if q.pair_safe_8bit and 8 in bits else "")
    return (f"ONNX QDQ (opset 21) written from gzsq's simulation model, W{q.w_bits}A{q.a_bits}"
            f"{', first and last layer at 8 bits' if q.first_last_8bit else ''}: weights "
            f"{'/'.join(map(str, bits))}-bit symmetric per output channel "
            f"({q.weight_clip} ranges, {method}{pair_safe}), "
            f"activations {'/'.join(map(str, a_bits))}-bit asymmetric per tensor ({q.observer} ranges), biases "
            "int32, float logits; 4-bit tensors in ONNX's int4/uint4, the others in int8/uint8 (a Clip keeps "
            f"narrower grids exact); every scale and zero point in {encodings_path_for(encodings['onnx']).name}")


def _finish(model, out, job: QuantizeJob, evaluation, calibration, calib, seconds, *, layout,
            encodings: dict | None = None, runtime_error: str | None = None) -> dict:
    backend = BACKENDS[out.suffix.lower()]
    fmt = FORMATS[backend] if encodings is None else _simulator_format(job, encodings)
    if backend == "onnxruntime" and encodings is None:
        if job.export.calibration == "percentile":
            fmt = fmt.replace("min/max ranges", "percentile ranges (ONNX Runtime's 99.999th)")
        fmt += ("; weights on the full [-127, 127] grid" if not job.export.reduce_range else
                "; weight grids safe for CPUs without VNNI (whose u8xs8 kernels add pairs in 16 bits): depthwise convs "
                "on the full [-127, 127] grid (their kernel widens to 32 bits), other convs per channel on the finest "
                "grid whose neighbouring-pair sums cannot saturate, the classifier on ONNX Runtime's reduce_range "
                "[-64, 64]")
        if job.export.bias_correction:
            fmt += "; conv biases corrected for the mean shift of weight rounding"
    if encodings is not None:
        ranges = {a["tensor"]: (a["min"], a["max"]) for a in encodings["activations"].values()}
    else:
        ranges = activation_ranges(out) if backend == "onnxruntime" else {}
    report = {
        "model": model_name(model),
        "output": str(out),
        "backend": backend,
        "format": fmt,
        "input": {"layout": layout, "size": model.input_spec.size, "mean_0to1": list(model.input_spec.mean),
                  "std_0to1": list(model.input_spec.std), "channel_order": model.input_spec.channel_order},
        "setting": calib.setting,
        "calib": calib.label,
        "calib_set": calibration.log.get("calib_set"),
        "n_calib": calib.n_images,
        "seed": calib.seed,
        "distill": {k: calibration.log[k] for k in ("iterations", "final_loss", "stopped_early")
                    if k in calibration.log},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "activation_ranges": {name: [round(lo, 6), round(hi, 6)] for name, (lo, hi) in ranges.items()},
        "evaluation": evaluation,
    }
    if runtime_error is not None:  # the saved report says it too, not only the command's output
        report["runtime_error"] = runtime_error
    if encodings is not None:
        report["quantization"] = job.simulated_scheme.to_dict()
        report["encodings"] = str(encodings_path_for(out))
        rec = encodings.get("reconstruction")
        report["reconstruction"] = None if rec is None else {
            "config": rec["config"], "seconds": rec["seconds"], "units": len(rec["units"]),
            "final_loss_last_unit": rec["units"][-1]["final_loss"] if rec["units"] else None}
    json_path, md_path = report_paths(out)
    write_text_atomic(json_path, json.dumps(report, indent=1) + "\n")
    write_text_atomic(md_path, render_report(report))
    return report


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
              "agreement": round(agreement(int8, fp32), 2)}
    if len(labels) and (n_outputs is None or int(labels.max()) < n_outputs):
        result["fp32_top1"] = round(top1(fp32, labels), 2)
        result["int8_top1"] = round(top1(int8, labels), 2)
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
    q = r.get("quantization")
    kind = f"W{q['w_bits']}A{q['a_bits']}" if q else "int8"
    if r.get("reconstruction"):
        rec = r["reconstruction"]
        lines[-1:] = [f"- reconstruction: {rec['config']['method']}, {rec['config']['iters']} steps per unit, "
                      f"{rec['units']} units, {rec['seconds']} s", ""]
    if r.get("runtime_error"):
        lines += [f"{r['runtime_error']}; the accuracy below is the simulator's.", ""]
    e = r.get("evaluation")
    if e:
        runtime = "ONNX Runtime" if r["backend"] == "onnxruntime" else "PyTorch, PT2E program run eagerly"
        if e.get("measured_by"):
            runtime = e["measured_by"]
        lines += [f"## Accuracy ({runtime}: FP32 model vs {kind} model)", "",
                  f"on `{e['data']}` ({e['images']} images; {e['preprocessing']})", "", "| | value |",
                  "| --- | --- |"]
        if "fp32_top1" in e:
            lines += [f"| FP32 top-1 | {e['fp32_top1']:.2f} % |", f"| {kind} top-1 | {e['int8_top1']:.2f} % |",
                      f"| Δ | {e['int8_top1'] - e['fp32_top1']:+.2f} pt |"]
        lines += [f"| top-1 agreement | {e['agreement']:.2f} % |"]
        if "simulator_top1" in e:
            lines += [f"| simulator top-1 | {e['simulator_top1']:.2f} % |"]
        if "runtime_matches_simulator" in e:
            lines += [f"| ONNX Runtime's prediction == simulator's | {e['runtime_matches_simulator']:.2f} % |"]
        lines += [""]
        if "note" in e:
            lines += [e["note"], ""]
    if not r["activation_ranges"]:
        return "\n".join(lines) + "\n"
    lines += [f"## Activation ranges in the {kind} model", "", "| tensor | min | max |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {lo:.4g} | {hi:.4g} |" for name, (lo, hi) in r["activation_ranges"].items()]
    return "\n".join(lines) + "\n"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_distill_outputs(out: str | Path, job: DistillJob) -> Path:
    """Before any work: outputs writable and not already there (unless force); an old OUT.partial needs a
    decision (resume or force). → the OUT.partial path."""
    ensure_output_path(out, force=job.force)
    if job.preview:
        ensure_output_path(job.preview, force=job.force, flag="--preview")
        if Path(job.preview).absolute() == Path(out).absolute():
            raise OutputError("--preview and -o name the same file; give the preview its own .png name")
    partial = partial_path(out)
    if partial.exists() and not (job.resume or job.force):
        raise OutputError(f"{partial} holds an interrupted run: pass --resume to continue it or --force to start over")
    return partial


def distill_set(model: nn.Module, out: str | Path, job: DistillJob = DistillJob()) -> tuple[Calibration, str | None]:
    """Make a calibration set as `job.calibration` says and write it to `out` (.npz; a preview grid too).

    The same seed and inputs give a byte-identical file on one thread (`torch.set_num_threads(1)`). The
    run saves its state to OUT.partial as it goes; an interruption keeps it, and `resume=True` continues
    to the images an uninterrupted run gives. → (the set, a note on what happened to an old OUT.partial,
    or None).
    """
    partial = check_distill_outputs(out, job)
    if distributed.active() and job.resume:
        raise ConfigError("--resume continues a one-process run (each torchrun rank holds only part of the images); "
                          "rerun it without torchrun")
    calibration_config = check_calibration(model, job.calibration)
    existed = partial.exists()
    # The weights themselves are in the checkpoint's key (a hash of the targets they give), so the same
    # file reached by another path, or from another folder, still resumes.
    key = json.dumps({"model": model_name(model), "setting": calibration_config.setting,
                      "calib": calibration_config.source, "preset": calibration_config.preset}, sort_keys=True)
    checkpoint = Checkpoint(str(partial), every=job.checkpoint_every, resume=job.resume and not job.force, key=key)
    meta = {"model": model_name(model), "setting": calibration_config.setting, "preset": calibration_config.preset}
    try:
        calibration = calibrate(model, calibration_config, progress=job.progress,
                                checkpoint=None if distributed.active() else checkpoint)
        if not distributed.is_main():  # under torchrun: every rank distilled its share, rank 0 writes
            return calibration, None
        # Both files appear together or not at all: each is renamed into place only after both are complete,
        # and a Ctrl-C is acted on only before the first rename.
        with atomic_path(out, interruptible=not job.preview) as tmp_out:
            save_calibration(tmp_out, calibration, meta)
            if job.preview:
                with atomic_path(job.preview) as tmp_preview:
                    save_preview(tmp_preview, calibration.images, model.input_spec)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        kept = (f"{partial} keeps the progress: rerun the same command with --resume to continue"
                if partial.exists() else "nothing was written; rerun to start again")
        raise RunInterrupted(f"{describe(signum)} before {out} was written; {kept}", signum) from None
    except DistillationDivergedError:
        partial.unlink(missing_ok=True)  # resuming would diverge again
        raise
    partial.unlink(missing_ok=True)
    return calibration, _resume_note(job, partial, existed)


def _resume_note(job: DistillJob, partial: Path, existed: bool) -> str | None:
    """What happened to an old checkpoint, told once the run succeeded (an error must stay the only line)."""
    if job.force and existed:
        return f"--force: started over; the interrupted run in {partial} was discarded"
    if job.resume and existed:
        return f"resumed the interrupted run saved in {partial}"
    if job.resume:
        return f"--resume: there was no {partial}; ran from the beginning"
    return None
