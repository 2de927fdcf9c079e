"""Command line: `gzsq quantize` (the main job), `gzsq evaluate`, `gzsq distill` and `gzsq bench`.

Errors the user can fix print one line `gzsq: error: …` and exit 2; progress
bars go to stderr; with --json the last line of stdout is one JSON object.

Bad flags are such errors too (one line, exit 2); Ctrl-C prints one line and
exits 130 (SIGTERM: 143); anything else is a bug and keeps its traceback. Results go to
stdout; progress bars (when stderr is a terminal) and notes go to stderr: `-q`
silences both, `-v` adds notes. Output files are written atomically, never
over an existing file without --force.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from .errors import GzsqError, RunInterrupted
from .interrupt import describe, signals_handled
from .config import MAX_CALIBRATION_IMAGES, MAX_SEED, RECONSTRUCT_LOSSES, ReconstructConfig

EPILOG_EVALUATE = """examples:
  gzsq evaluate --model cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th \\
      --data ../shared/data/cifar10/test.npz --calib real --calib-data ../shared/data/cifar10/train-jpeg.tar
  gzsq evaluate --model efficientnet-lite0 --data ../shared/data/imagenet-sample --calib gaussian --json
"""


def _whole_number(expected: str, low: int, high: int | None = None):
    """An argparse type: an int in [low, high]; anything else is refused in one line saying what was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_bits = _whole_number("a bit-width from 2 to 8", 2, 8)
_seed = _whole_number(f"a seed from 0 to {MAX_SEED}", 0, MAX_SEED)
_threads = _whole_number("a number of threads >= 0 (0: torch's default)", 0)
_positive = _whole_number("a positive integer", 1)


def _non_negative(text: str) -> float:
    """An argparse type: a finite number ≥ 0, refused in one line otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _n_calib(text: str) -> int:
    value = _positive(text)
    if value > MAX_CALIBRATION_IMAGES:
        raise argparse.ArgumentTypeError(f"at most {MAX_CALIBRATION_IMAGES} calibration images, got {value} "
                                         "(256 is the usual choice)")
    return value


class UsageError(GzsqError):
    """A command line argparse rejected; main() prints it as one line, exit 2."""


class GzsqArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `gzsq: error:` line (not usage + message) and never exits by itself.

    Subparsers inherit the class, so `gzsq evaluate --w-bits 9` behaves the same.
    """

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_verbosity_args(p: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before and after the command name; the subcommand's copies default to SUPPRESS so they
    # do not overwrite a flag given before it.
    default = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="count", help="more notes on stderr (progress bars even when "
                   "stderr is not a terminal)", **({"default": 0} if top else default))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no notes; errors and "
                   "results only", **({"default": False} if top else default))


MODEL_HELP = ("zoo name — cifar10-resnetN (N=6n+2, needs --weights), cifar10-resnet20-nf, cifar10-resnet32-nf, cifar10-vgg7-nf, "
              "efficientnet-lite0/1/2, "
              "mobilenet-v2 (--weights: torchvision's ImageNet checkpoint) — or an .onnx classifier file (state its "
              "preprocessing with the --input-* flags)")


def _add_model_args(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """MODEL (positional for quantize/distill, --model for evaluate), --weights, and the ONNX input flags:
    every command takes the same model forms and reads them with `_load_model(args)`."""
    if positional:
        p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    else:
        p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--weights", metavar="PATH", help="checkpoint for a zoo model (a state dict, loaded weights-only)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="where distillation, reconstruction and evaluation run (default: cpu; auto: a CUDA GPU when "
                        "there is one); ranges, export and ONNX Runtime stay on the CPU")
    _add_onnx_input_args(p)


def _load_model(args):
    from .models import load_model

    return load_model(args.model, args.weights, _onnx_options(args))


def _three_floats(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.485,0.456,0.406, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected one or three numbers, got {text!r}")
    return values


def _add_onnx_input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ONNX input (only for MODEL.onnx: how the file wants its image)")
    g.add_argument("--input-layout", choices=["nchw", "nhwc"],
                   help="tensor layout of the input (default: from its shape: 3 in dim 1 → nchw, in dim 3 → nhwc)")
    g.add_argument("--input-scale", type=float, default=1.0, metavar="S",
                   help="pixel range the mean/std are given in: 1 for 0..1 pixels (default), 255 for 0..255")
    g.add_argument("--input-mean", type=_three_floats, default=(0.485, 0.456, 0.406), metavar="M",
                   help="per-channel mean subtracted, in model channel order (default: ImageNet 0.485,0.456,0.406)")
    g.add_argument("--input-std", type=_three_floats, default=(0.229, 0.224, 0.225), metavar="S",
                   help="per-channel std divided by (default: ImageNet 0.229,0.224,0.225; 1 for mean-only models)")
    g.add_argument("--bgr", action="store_true", help="the model wants BGR channel order (Caffe-style)")
    g.add_argument("--input-resize", type=_positive, metavar="N",
                   help="resize the shorter side of images to N, then centre-crop to the model's size (default: "
                        "size/0.875); images that already have the model's size are used as they are")


def _onnx_options(args):
    from .models.onnx_import import OnnxInputOptions

    return OnnxInputOptions(layout=args.input_layout, mean=args.input_mean, std=args.input_std,
                            scale=args.input_scale, channel_order="bgr" if args.bgr else "rgb",
                            resize=args.input_resize)


def _add_calib_args(p: argparse.ArgumentParser, default_n: str) -> None:
    from .sources import available_sources

    p.add_argument("--calib", default="gzsq", choices=available_sources(),
                   help="where calibration images come from: gzsq (distilled from the weights, the method), "
                        "zeroq (distilled from BN statistics; bn setting only), gaussian / uniform noise, or "
                        "real images from --calib-data (default: gzsq)")
    p.add_argument("--preset", default="auto",
                   help="gzsq recipe: 'auto' (the default: 'local-classes' for depthwise-separable networks such as "
                        "MobileNet and EfficientNet, 'local-long' there when the job reconstructs, and 'local' for "
                        "int8 jobs; "
                        "below 8 bits 'half-local' when the job reconstructs, 'default' when not), 'default' (best "
                        "measured for its time on the CIFAR "
                        "ResNets: 20 steps; at 224x224 16 images optimized, the rest flips/shifts), 'local' (each "
                        "layer's target from the images' own input statistics: +1.3-1.7 pt int8 agreement on "
                        "EfficientNet-Lite0/1, +3.8-4.9 pt W4A4 with reconstruction on ResNet-32/44; worse on ResNet-20 "
                        "and at W4A4 without reconstruction), 'local-classes' (local with each image pushed towards a "
                        "random class of its own: int8 agreement +0.5-0.9 pt on MobileNetV2 and EfficientNet-Lite1/2, "
                        "0.3-1.3 pt lower on the BN-trained CIFAR ResNets), 'local-long' (local-classes with 100 steps, "
                        "at 224x224 on 8 images, each seen every step as a random crop of itself, under a smoothness "
                        "prior, their colours centred, and random crops of them: learned rounding at W4A8 on "
                        "MobileNetV2 +11.6 pt over 8 images with flips/shifts and no class term, EfficientNet-Lite0 "
                        "+19.0 pt), "
                        "'half-local' (half the set with local targets, half with "
                        "the default's, for learned rounding: W4A4 ResNet-32 +4.4 pt over 'default'; its wide ranges "
                        "do not suit round to nearest), 'half-local-long' (half-local with 100 steps on the propagated "
                        "half: W4A4 ResNet-20 +1.1 pt, ResNet-32 -1.1 pt), 'fast' (half of a CIFAR set optimized: "
                        "~2x faster there, "
                        "worse at W4A4), 'longer' (the default with 40 steps: +1 pt W6A6 agreement on Lite0 and "
                        "MobileNetV2 for twice the time), 'mixed' (half the set distilled, half left as N(0, 1) noise: "
                        "on BN-free CIFAR nets whose distilled ranges clip, noise's agreement or better at W8A8-W4A8), "
                        "'thorough' (every image, 30 steps) or 'paper' (the paper's recursion and loss literally, up "
                        "to 500 steps)")
    p.add_argument("--calib-data", metavar="PATH",
                   help="dataset for --calib real (.npz, folder with labels.csv, or tar of class folders). "
                        "If it is the evaluation set, two folds are used so no image is calibrated and evaluated")
    p.add_argument("--n-calib", type=_n_calib, metavar="N",
                   help=f"number of calibration images, 1 to {MAX_CALIBRATION_IMAGES} (default: {default_n})")
    p.add_argument("--seed", type=_seed, default=0, help="seed for every random choice (default: 0)")
    p.add_argument("--threads", type=_threads, default=0, metavar="N",
                   help="CPU threads for distillation, the int8 export and evaluation (default 0: torch's default, "
                        "one per core or OMP_NUM_THREADS). The thread count changes float rounding, so pass --threads 1 "
                        "for byte-identical sets on any machine. When another job "
                        "shares the cores, fewer threads than cores is much faster than oversubscribing them")
    p.add_argument("--setting", choices=["bn", "bn-free"],
                   help="what the calibration source may read: bn (BatchNorm statistics) or bn-free "
                        "(only the folded network, as in an ONNX/TFLite export). Default: bn if the model has BN")


EPILOG_QUANTIZE = """examples:
  gzsq quantize efficientnet-lite0 -o lite0-int8.onnx
  gzsq quantize efficientnet-lite0 -o lite0-int8.onnx --eval-data ../shared/data/imagenet-sample --json
  gzsq quantize cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th -o r20-int8.onnx
  gzsq quantize cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th -o r20-int8.pt2   # PT2E
  gzsq quantize open_nsfw.onnx -o nsfw-int8.onnx --input-layout nhwc --bgr --input-scale 255 \\
      --input-mean 104,117,123 --input-std 1 --input-resize 256
  gzsq quantize cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th -o r20-w4.onnx \\
      --w-bits 4 --a-bits 8 --eval-data ../shared/data/cifar10/test.npz   # int4 weights, reconstructed

Writes OUT (int8 QDQ ONNX for ONNX Runtime, or a .pt2 PT2E program) and OUT.report.md / .json
beside it: seconds per stage, every activation range, and with --eval-data FP32 vs int8 top-1 and
agreement measured on the backend's own FP32 and int8 models.

Below 8 bits (--w-bits/--a-bits) or with --reconstruct, the ONNX file is written from gzsq's
simulation model instead: its learned integers and step sizes exactly (int4 weights through opset-21
DequantizeLinear), plus OUT.encodings.json (bits, scales and zero points of every tensor). The report
then also gives the simulator's top-1 and how often ONNX Runtime's prediction equals the simulator's.
Reconstruction keeps its progress in OUT.partial: after Ctrl-C, rerun the same command with --resume.
"""


def _add_reconstruct_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reconstruct", default="auto", choices=["auto", "none", "adaround", "block"],
                   help="learn weight rounding and activation step sizes on the calibration images against the "
                        "float model: block (per residual block, QDrop mixing), adaround (per layer), none "
                        "(round to nearest). auto: block below 8 bits, none at W8A8 (results/reconstruct.md)")
    p.add_argument("--reconstruct-iters", type=_positive, default=500, metavar="N",
                   help="optimizer steps per block or layer (default: 500)")
    p.add_argument("--reconstruct-loss", default=ReconstructConfig.loss, choices=list(RECONSTRUCT_LOSSES),
                   help="a unit's output error: residual-normalized (default) divides each channel's error by its "
                        "variance over the calibration images on residual blocks and keeps plain squared error "
                        "elsewhere; channel-normalized does so everywhere; mse nowhere "
                        "(results/lowbit/what_limits_reconstruction.md measures them)")
    p.add_argument("--reconstruct-act-floor", type=_non_negative, default=ReconstructConfig.act_scale_floor,
                   metavar="F", help="the smallest a learned activation step size may get, as a share of its "
                        "calibrated one (0: no bound; 1: step sizes may widen, never narrow): distilled images' deep "
                        "activations can be narrower than real ones, and the step sizes learned on them narrow with "
                        "them; 0.9 rescued a W4A4 ResNet-56, cost a ResNet-20 0.7 pt and a never-normalized "
                        "ResNet-32 3 pt (results/deeper_resnet/; default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = GzsqArgumentParser(prog="gzsq", description="Data-free quantization of trained CNNs (GZSQ).")
    _add_verbosity_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    qz = sub.add_parser("quantize", help="the main job: model in → int8 ONNX model out, with no data",
                        description="Distill calibration images from the model's weights (or another --calib "
                                    "source), export FP32 ONNX, quantize it to int8 with ONNX Runtime, and "
                                    "write a report.",
                        epilog=EPILOG_QUANTIZE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(qz, positional=True)
    qz.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="where to write the int8 model; the suffix picks the backend: .onnx (ONNX Runtime QDQ) "
                         "or .pt2 (PyTorch PT2E via torchao, an optional extra)")
    qz.add_argument("--eval-data", metavar="PATH", help="labelled images to measure FP32 vs int8 on with ONNX "
                                                        "Runtime (.npz, folder with labels.csv, or tar)")
    qz.add_argument("--calib-set", metavar="SET.npz",
                    help="calibrate on a set written earlier by `gzsq distill` instead of making one now "
                         "(distill once, quantize many times); --calib/--n-calib/--seed are then ignored")
    qz.add_argument("--keep-fp32", action="store_true", help="also write the FP32 ONNX export as OUT.fp32.onnx")
    qz.add_argument("--full-range-weights", action="store_true",
                    help="int8 weights on the full [-127, 127] grid everywhere instead of grids that cannot saturate "
                         "16-bit sums; only for CPUs with VNNI / ARM dot-product (elsewhere int8 kernels saturate). "
                         "Also the 8-bit layers of a model written from the simulator")
    qz.add_argument("--no-bias-correction", action="store_true",
                    help="skip bias correction (by default each conv's bias absorbs the mean shift its weight "
                         "rounding causes, measured on the calibration images; costs a second quantization pass)")
    qz.add_argument("--w-bits", type=_bits, default=8, help="weight bits, 2-8 (default: 8; 4 is stored as int4)")
    qz.add_argument("--a-bits", type=_bits, default=8, help="activation bits, 2-8 (default: 8; 4 is stored as uint4)")
    qz.add_argument("--first-last-8bit", action="store_true",
                    help="below 8 bits, keep the first and last layer (and their inputs) at 8 bits")
    qz.add_argument("--observer", choices=["minmax", "percentile", "mse"], default=None,
                    help="activation range rule. Default: minmax for the int8 ONNX Runtime export, mse below 8 "
                         "bits. percentile clips outliers (ONNX Runtime's 99.999th at int8; 0.01/99.99th in the "
                         "simulator), which serves real photos with a few extreme pixels; mse only below 8 bits "
                         "or with --reconstruct")
    _add_reconstruct_args(qz)
    qz.add_argument("--force", action="store_true", help="overwrite OUT if it exists (and start over instead of "
                                                         "refusing an old OUT.partial)")
    qz.add_argument("--resume", action="store_true",
                    help="continue an interrupted reconstruction from OUT.partial (the same command and flags): its "
                         "calibration images and the units already learned are kept there, and the result is the "
                         "same as an uninterrupted run's. Ctrl-C during reconstruction keeps OUT.partial")
    qz.add_argument("--json", action="store_true", help="print the report as one JSON object on the last line")
    _add_calib_args(qz, "256, or 64 for ImageNet-size models")
    _add_verbosity_args(qz, top=False)
    qz.set_defaults(func=cmd_quantize)

    ev = sub.add_parser("evaluate", help="quantize with a calibration source and measure accuracy vs FP32",
                        description="Fold BN, calibrate activation ranges on images from --calib, simulate "
                                    "W/A-bit quantization (docs/how-it-works.md §3) and report FP32 top-1, quantized top-1 and "
                                    "top-1 agreement on --data.",
                        epilog=EPILOG_EVALUATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_verbosity_args(ev, top=False)
    _add_model_args(ev)
    ev.add_argument("--data", required=True, metavar="PATH", help="labelled evaluation set (.npz, folder with "
                                                                    "labels.csv, or tar of class folders)")
    ev.add_argument("--w-bits", type=_bits, default=8, help="weight bits, 2-8 (default: 8)")
    ev.add_argument("--a-bits", type=_bits, default=8, help="activation bits, 2-8 (default: 8)")
    ev.add_argument("--observer", default=None, choices=["minmax", "percentile", "mse"],
                    help="activation range rule (percentile = 0.01/99.99th). Default: minmax, or mse when "
                         "reconstructing below 8 bits (the start quantize uses: results/reconstruct.md)")
    ev.add_argument("--per-tensor-weights", action="store_true", help="one weight scale per tensor, not per channel")
    ev.add_argument("--weight-clip", default=None, choices=["maxabs", "mse"],
                    help="weight range: max-abs or MSE-optimal clipping (helps at <= 6 bits). Default: maxabs, "
                         "or mse when reconstructing below 8 bits")
    ev.add_argument("--first-last-8bit", action="store_true", help="keep the first and last layer at 8 bit")
    _add_reconstruct_args(ev)
    _add_calib_args(ev, "256, or 64 for ImageNet-size models")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    ev.set_defaults(func=cmd_evaluate)

    ds = sub.add_parser("distill", help="synthesize a calibration set and save it as .npz (+ a preview grid)",
                        description="Make N calibration images with a source (default gzsq) and write them, "
                                    "with their settings and loss curve, to an .npz file. The same seed and "
                                    "inputs with --threads 1 give a byte-identical file. Ctrl-C keeps OUT.npz.partial: rerun "
                                    "with --resume to continue. `--preset auto` distills what an int8 job uses (local targets, "
                                    "each image towards a class of its own on depthwise-separable networks); a "
                                    "set meant for a job below 8 bits is made with --preset half-local (learned "
                                    "rounding) or --preset default (round to nearest), as `auto` does there, on "
                                    "networks without depthwise convs.")
    _add_verbosity_args(ds, top=False)
    _add_model_args(ds, positional=True)
    ds.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="where to write the set")
    ds.add_argument("--preview", metavar="GRID.png", help="also write a picture grid of the images")
    ds.add_argument("--force", action="store_true", help="overwrite existing output files (and start over "
                                                         "instead of refusing an old OUT.npz.partial)")
    ds.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from OUT.npz.partial (the same command and flags); the "
                         "result is the same as an uninterrupted run's")
    ds.add_argument("--checkpoint-every", type=_positive, default=10, metavar="K",
                    help="save the distillation state to OUT.npz.partial every K iterations (default: 10); "
                         "the file is removed once OUT.npz is written")
    _add_calib_args(ds, "256, or 64 for ImageNet-size models")
    ds.set_defaults(func=cmd_distill)

    bn = sub.add_parser("bench", help="time the main job and int8 vs FP32 latency on the CPU it runs on",
                        description="Run `gzsq quantize` on MODEL into a temporary folder (seconds per stage,\n"
                                    "calibration images/s), then time ONNX Runtime on the FP32 and the int8 model at\n"
                                    "batch 1 and 32, interleaved so that machine noise hits both alike (median ms,\n"
                                    "speed-up), and report the peak memory. Nothing is written. Run it with nothing\n"
                                    "else on the CPU: the ratios are more trustworthy than the absolute times.",
                        epilog="examples:\n  gzsq bench efficientnet-lite0\n"
                               "  gzsq bench cifar10-resnet20 --weights ../shared/models/cifar10/resnet20.th --json\n",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_verbosity_args(bn, top=False)
    _add_model_args(bn, positional=True)
    bn.add_argument("--repeats", type=_positive, default=20, metavar="R",
                    help="timed runs per model at batch 1 (a third of that, at least 5, at batch 32); default 20")
    bn.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    _add_calib_args(bn, "256, or 64 for ImageNet-size models")
    bn.set_defaults(func=cmd_bench)
    return parser


def _calibration(args):
    """The CalibrationConfig a command line asks for (defaults resolved later, per model)."""
    from .config import CalibrationConfig

    return CalibrationConfig(source=args.calib, n_images=args.n_calib, seed=args.seed, preset=args.preset,
                             setting=args.setting, data=args.calib_data,
                             saved_set=getattr(args, "calib_set", None))


def cmd_quantize(args) -> int:
    from dataclasses import replace

    from .config import EvaluationConfig, Int8ExportConfig, QuantConfig, QuantizeJob
    from .errors import ConfigError
    from .partial import partial_path
    from .pipeline import backend_for, check_quantize_outputs, quantize_model, report_paths

    job = QuantizeJob(calibration=_calibration(args),
                      export=replace(Int8ExportConfig(), reduce_range=not args.full_range_weights,
                                     bias_correction=not args.no_bias_correction),
                      evaluation=EvaluationConfig(data=args.eval_data, threads=args.threads),
                      quant=QuantConfig.starting_point(args.w_bits, args.a_bits, first_last_8bit=args.first_last_8bit),
                      reconstruction=_reconstruction(args), keep_fp32=args.keep_fp32, progress=_progress(args),
                      resume=args.resume)
    if job.from_simulator and args.no_bias_correction:
        raise ConfigError("--no-bias-correction sets ONNX Runtime's int8 quantizer; below 8 bits or with "
                          "--reconstruct the model is written from gzsq's simulator, so drop it")
    if args.observer and job.from_simulator:
        job = replace(job, quant=replace(job.quant, observer=args.observer))
    elif args.observer == "mse":
        raise ConfigError("--observer mse is for models written from gzsq's simulator (below 8 bits or with "
                          "--reconstruct); ONNX Runtime's int8 export takes minmax or percentile")
    elif args.observer and backend_for(args.output) != "onnxruntime":
        raise ConfigError("--observer sets ONNX Runtime's int8 calibration; a .pt2 output is calibrated by "
                          "torchao's own observers")
    elif args.observer:
        job = replace(job, export=replace(job.export, calibration=args.observer))
    check_quantize_outputs(args.output, job, force=args.force)  # refused before the model loads
    busy = _use_threads(args)
    model = _load_model(args)
    out = Path(args.output)
    partial = partial_path(out)
    resumable = args.resume and partial.exists()
    report = quantize_model(model, out, job, force=args.force)
    if report is None:  # a torchrun rank other than 0: it shared the work, rank 0 wrote and reports
        return 0
    if args.resume:
        _note(args, f"resumed the interrupted reconstruction saved in {partial}" if resumable
              else f"--resume: there was no {partial}; ran from the beginning")
    if args.json:
        slim = {k: v for k, v in report.items() if k != "activation_ranges"}
        slim["activation_ranges"] = len(report["activation_ranges"])
        print(json.dumps(slim))
    else:
        q = job.quant
        kind = f"W{q.w_bits}A{q.a_bits}" if job.from_simulator else "int8"
        extra = f", {report['encodings']}" if job.from_simulator else ""
        print(f"wrote {out} ({report['backend']} {kind}){extra} and {report_paths(out)[1]}")
        print("  seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
        if report.get("runtime_error"):
            print(f"  {report['runtime_error']}; accuracy below is the simulator's")
        e = report["evaluation"]
        if e:
            print(f"  images: {e['preprocessing']}")
            if "fp32_top1" in e:
                print(f"  {report['backend']} on {e['images']} images: FP32 top-1 {e['fp32_top1']:.2f} %, {kind} top-1 "
                      f"{e['int8_top1']:.2f} % ({e['int8_top1'] - e['fp32_top1']:+.2f} pt)")
            print(f"  agreement ({kind} top-1 == FP32 top-1): {e['agreement']:.2f} %")
            if "runtime_matches_simulator" in e:
                sim_top1 = f"simulator top-1 {e['simulator_top1']:.2f} %, " if "simulator_top1" in e else ""
                print(f"  {sim_top1}ONNX Runtime's prediction == the simulator's on "
                      f"{e['runtime_matches_simulator']:.2f} % of images")
    if busy:
        _note(args, busy)
    return 0


def _verbosity(args) -> int:
    """-1 quiet, 0 normal, 1+ verbose."""
    return -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0) or 0


def _progress(args) -> bool:
    """Progress bars (tqdm: rate and ETA) when stderr is a terminal, or always with -v; never with -q."""
    v = _verbosity(args)
    return v >= 1 or (v == 0 and sys.stderr.isatty())


def _note(args, message: str, level: int = 0) -> None:
    """A note for the user on stderr (stdout is for results); level 1 notes need -v, -q silences all."""
    if _verbosity(args) >= level:
        print(f"gzsq: {message}", file=sys.stderr)


def _use_threads(args) -> str | None:
    """Apply --threads; → a note for the end of the run if the CPU was already busy when it started.

    Distillation and evaluation are compute-bound: two jobs each using every core run much slower
    than one job alone. The note is told after success, so an error stays the only line.
    """
    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        return None
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except (AttributeError, OSError):  # no load average on this platform
        return None
    if load < cores:
        return None
    return (f"the CPU was busy when this run started (load {load:.1f} on {cores} cores), so it ran slower than "
            "usual; with another job running, --threads 1 is often faster")


def cmd_evaluate(args) -> int:
    from .config import ImagesFor, QuantConfig
    from .evaluation import evaluate_quantization, load_eval_set
    from .sources import check_calibration

    # Unset ranges: round to nearest starts from the reference scheme's min/max; reconstruction from the
    # ranges `gzsq quantize` starts from (MSE-clipped below 8 bits), the start it measured best from.
    reconstruction = _reconstruction(args)
    start = QuantConfig.starting_point(args.w_bits, args.a_bits) if reconstruction else QuantConfig()
    quant = QuantConfig(w_bits=args.w_bits, a_bits=args.a_bits, observer=args.observer or start.observer,
                        per_channel_weights=not args.per_tensor_weights,
                        weight_clip=args.weight_clip or start.weight_clip, first_last_8bit=args.first_last_8bit)
    progress = _progress(args)
    t = time.perf_counter()
    busy = _use_threads(args)
    model = _load_model(args)
    # resolved for this job: `auto` picks other images for a job that learns its rounding on them
    calibration = check_calibration(model, _calibration(args), ImagesFor.job(quant, reconstruction))
    _note(args, f"loaded {args.model} (setting {calibration.setting}) in {time.perf_counter() - t:.1f} s", 1)
    eval_set = load_eval_set(model, args.data, progress=progress)
    _note(args, f"{len(eval_set.labels)} evaluation images from {args.data}", 1)
    load_seconds = time.perf_counter() - t
    result = evaluate_quantization(model, eval_set, calibration, quant, reconstruction=reconstruction,
                                   progress=progress)
    result["seconds"] = {"load": round(load_seconds, 2), **result["seconds"]}
    if args.json:
        print(json.dumps(result))
    else:
        s = result
        print(f"model {s['model']}  setting {s['setting']}  calib {s['calib']} (n={s['n_calib']}, seed={s['seed']}"
              f"{', 2 folds' if s['folds'] == 2 else ''})  W{s['w_bits']}A{s['a_bits']}  observer {s['observer']}, "
              f"weights {s['weight_clip']}  reconstruct {s['reconstruct']}")
        print(f"  images          {s['preprocessing']}")
        print(f"  FP32 top-1      {s['fp32_top1']:6.2f} %")
        print(f"  quantized top-1 {s['top1']:6.2f} %   ({s['top1'] - s['fp32_top1']:+.2f} pt)")
        print(f"  agreement       {s['agreement']:6.2f} %  (quantized top-1 == FP32 top-1)")
        print("  seconds         " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
    if busy:
        _note(args, busy)
    return 0


def _reconstruction(args):
    """The ReconstructConfig `--reconstruct` asks for, or None (round to nearest)."""
    method = args.reconstruct
    if method == "auto":
        method = "block" if min(args.w_bits, args.a_bits) < 8 else "none"
    if method == "none":
        return None
    return ReconstructConfig(method=method, iters=args.reconstruct_iters, loss=args.reconstruct_loss,
                             act_scale_floor=args.reconstruct_act_floor)


def cmd_bench(args) -> int:
    from .bench import bench_model

    busy = _use_threads(args)
    model = _load_model(args)
    result = bench_model(model, _calibration(args), repeats=args.repeats, threads=args.threads,
                         progress=_progress(args))
    if args.json:
        print(json.dumps(result))
    else:
        s = result["seconds"]
        print(f"model {result['model']}  setting {result['setting']}  calib {result['calib']} (n={result['n_calib']})")
        print(f"  gzsq quantize   {s['quantize_total']:.1f} s in all: calibration data {s['calibration_data']:.1f} s "
              f"({result['calibration_images_per_s']:.1f} images/s), FP32 export {s['export_fp32']:.1f} s, "
              f"int8 quantization {s['quantize_int8']:.1f} s")
        for row in result["latency"]:
            print(f"  batch {row['batch']:<3d}       FP32 {row['fp32_ms']:.2f} ms, int8 {row['int8_ms']:.2f} ms: "
                  f"int8 {row['speedup']:.2f}x faster (ONNX Runtime, median of interleaved runs)")
        print(f"  peak memory     {result['peak_memory_mib']:.0f} MiB")
    if busy:
        _note(args, busy)
    return 0


def cmd_distill(args) -> int:
    from .config import DistillJob
    from .pipeline import check_distill_outputs, distill_set

    job = DistillJob(calibration=_calibration(args), preview=args.preview, checkpoint_every=args.checkpoint_every,
                     resume=args.resume, force=args.force, progress=_progress(args))
    check_distill_outputs(args.output, job)  # refused before the model loads
    busy = _use_threads(args)
    model = _load_model(args)
    calibration, note = distill_set(model, args.output, job)
    if note:
        _note(args, note)
    print(f"wrote {len(calibration.images)} images from {args.calib} to {args.output} "
          f"({calibration.seconds:.1f} s)")
    if args.preview:
        print(f"wrote preview {args.preview}")
    if busy:
        _note(args, busy)
    return 0


def _one_line(message: object) -> str:
    """Errors are one line, whatever a message (or a path inside it) holds."""
    return " ".join(str(message).split()) or "unknown error"


def main(argv: list[str] | None = None) -> int:
    """Run one command; → exit status: 0 done, 2 a problem the user can fix, 130 interrupted (143: SIGTERM)."""
    parser = build_parser()
    with signals_handled():
        try:
            args = parser.parse_args(argv)
            with _quiet_third_parties(_verbosity(args)), _process_group(args):
                return args.func(args)
        except RunInterrupted as exc:
            if _first_rank():  # under torchrun every rank stops at the same step; rank 0 says so
                print(f"gzsq: error: {_one_line(exc)}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt as exc:  # Interrupted (a handled signal) or Python's own Ctrl-C
            signum = getattr(exc, "signum", signal.SIGINT)
            if _first_rank():
                print(f"gzsq: error: {describe(signum)}; no output was written", file=sys.stderr)
            return 128 + signum
        except GzsqError as exc:
            print(f"gzsq: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # under torchrun: a rank whose peer died sees the collective fail
            if not _torchrun_rank():
                raise
            print(f"gzsq: error: rank {_torchrun_rank()}: the job stopped ({_one_line(exc)[:300]}); another rank's "
                  "message says why", file=sys.stderr)
            return 1


def _torchrun_rank() -> str | None:
    """This process's rank when torchrun started several, else None."""
    return os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None


def _first_rank() -> bool:
    return _torchrun_rank() in (None, "0")


@contextlib.contextmanager
def _process_group(args):
    """--device for the whole command; under torchrun, join the other ranks (gloo on CPU, nccl on CUDA):
    only rank 0 prints results (every rank still reports its errors)."""
    from . import device, distributed

    with device.use(getattr(args, "device", "cpu")) as where:
        if not distributed.launched():
            yield
            return
        distributed.init(where)
        try:
            if distributed.is_main():
                yield
            else:
                with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                    yield
            # every rank done before any tears the group down (a rank whose peer closed its connections
            # mid-teardown once aborted in gloo); not on errors, where a peer may never arrive
            distributed.barrier()
        finally:
            distributed.finish()


@contextlib.contextmanager
def _quiet_third_parties(verbosity: int):
    """A successful run's stderr holds gzsq's own progress and notes only: the warnings and log lines torch,
    torchao and ONNX Runtime print (deprecations, export internals, optional kernels that did not load) are
    nothing a user can act on. `-v` shows them."""
    if verbosity >= 1:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("torch", "torchao", "onnx", "onnxruntime")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def entry() -> None:
    """The `gzsq` console script: `main()`, then the exit status. After a Ctrl-C or SIGTERM the process ends
    at once: everything is cleaned up by then, and tearing down torch and ONNX Runtime as the interpreter
    exits was most of the delay between the signal and the exit, too long for a user who asked it to stop."""
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
