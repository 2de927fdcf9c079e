"""Every command-line flag acts: each is run with a valid value and its effect is checked, not just exit 0.

The ONNX input flags (--input-layout, --bgr, --input-scale) are run on tiny ONNX classifiers built here with
that preprocessing baked in: "the brightest channel wins" (logits = the per-channel means of the normalized
input, plus a constant 0 for "no channel above the mean"), evaluated on single-colour images whose labels are
computed from the colour. With the right flag gzsq feeds the model what it wants and FP32 top-1 is exactly
100 %; without it, channels, scale or axes are mixed up and top-1 drops. Single-colour images keep their colour
through any resize and crop, so the labels hold whatever geometry gzsq applies.

The quantization flags of `gzsq evaluate` (--observer, --per-tensor-weights, --weight-clip, --first-last-8bit)
are checked on the quantizers the simulated model actually uses (its `encodings()`), against the same run
without the flag. The last test fails if any option of any command is mentioned nowhere under tests/.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gzsq.cli import build_parser
from gzsq.export import export_fp32_onnx
from gzsq.models.spec import InputSpec

from .cli_tools import run_cli
from .conftest import make_tiny

TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------- ONNX input flags


class BrightestChannel(nn.Module):
    """logits = [mean of input channel 0, 1, 2, then 0]; `nhwc`: the graph takes N×H×W×C."""

    def __init__(self, nhwc: bool = False):
        super().__init__()
        self.nhwc = nhwc
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.fc.weight.copy_(torch.cat([torch.eye(3), torch.zeros(1, 3)]))
            self.fc.bias.zero_()

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))


def _onnx_classifier(path: Path, *, nhwc: bool = False, size: int = 8) -> Path:
    shape = (1, size, size, 3) if nhwc else (1, 3, size, size)
    with warnings.catch_warnings():  # torch's notice that this exporter is the legacy one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(BrightestChannel(nhwc).eval(), (torch.zeros(shape),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return path


def _colour_set(path: Path, labels_of, size: int = 8, n: int = 64, seed: int = 0) -> Path:
    """n single-colour images (uint8 N×H×W×3, RGB) labelled by `labels_of(rgb colours as 0..255 floats)`."""
    colours = np.random.default_rng(seed).integers(0, 256, (n, 3))
    images = np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).astype(np.uint8)
    labels = labels_of(colours.astype(np.float64))
    assert len(set(labels.tolist())) == 4  # every class occurs: a wrong reading cannot score 100 % by luck
    np.savez(path, images=images, labels=labels)
    return path


def _brightest(values: np.ndarray) -> np.ndarray:
    """The class BrightestChannel predicts for per-channel normalized values (N×3), in the model's order."""
    return np.concatenate([values, np.zeros((len(values), 1))], axis=1).argmax(1)


def _fp32_top1(model: Path, data: Path, *flags) -> float:
    r = run_cli(["evaluate", "--model", model, "--data", data, "--calib", "gaussian", "--n-calib", "8", "--json",
                 *flags])
    assert r.code == 0, str(r)
    return json.loads(r.out.strip().splitlines()[-1])["fp32_top1"]


def test_bgr_feeds_the_channels_reversed(tmp_path):
    model = _onnx_classifier(tmp_path / "bgr.onnx")  # trained on BGR pixels in 0..1, mean 0.5, std 0.25
    data = _colour_set(tmp_path / "d.npz", lambda rgb: _brightest((rgb[:, ::-1] / 255 - 0.5) / 0.25))
    norm = ["--input-mean", "0.5", "--input-std", "0.25"]
    assert _fp32_top1(model, data, "--bgr", *norm) == 100.0
    assert _fp32_top1(model, data, *norm) < 80  # red and blue swapped (42 % here)


def test_input_scale_255_reads_mean_and_std_in_0_to_255_units(tmp_path):
    model = _onnx_classifier(tmp_path / "caffe.onnx")  # RGB pixels in 0..255, mean 127.5, std 64
    data = _colour_set(tmp_path / "d.npz", lambda rgb: _brightest((rgb - 127.5) / 64))
    norm = ["--input-mean", "127.5", "--input-std", "64"]
    assert _fp32_top1(model, data, "--input-scale", "255", *norm) == 100.0
    # read as 0..1 units, mean 127.5 pushes every channel far below zero: always "no channel above the mean"
    assert _fp32_top1(model, data, *norm) < 50  # 14 % here


def test_input_layout_nhwc_where_the_shape_alone_reads_as_nchw(tmp_path):
    """A 3×3-pixel NHWC model has input shape N×3×3×3: gzsq's guess from the shape is NCHW, wrongly."""
    model = _onnx_classifier(tmp_path / "nhwc.onnx", nhwc=True, size=3)
    data = _colour_set(tmp_path / "d.npz", lambda rgb: _brightest((rgb / 255 - 0.5) / 0.25), size=3)
    norm = ["--input-mean", "0.5", "--input-std", "0.25"]
    assert _fp32_top1(model, data, "--input-layout", "nhwc", *norm) == 100.0
    assert _fp32_top1(model, data, *norm) < 80  # columns averaged, not colours (34 % here)


# ------------------------------------------------------------------- quantization flags of evaluate


@pytest.fixture(scope="module")
def random_cifar_like(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("flags") / "random32.npz"
    np.savez(path, images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), labels=np.arange(16) % 10)
    return path


def _w4a4_encodings(data: Path, *flags) -> tuple[dict, dict]:
    """`gzsq evaluate` W4A4 on the BN-free ResNet-20 with noise calibration → (its JSON, the simulated model's
    quantizers), read from the one model the command quantized."""
    import gzsq.evaluation

    real = gzsq.evaluation.quantize
    seen = []

    def spy(*args, **kwargs):
        sim = real(*args, **kwargs)
        seen.append(sim.encodings())
        return sim

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gzsq.evaluation, "quantize", spy)
        r = run_cli(["evaluate", "--model", "cifar10-resnet20-nf", "--data", data, "--calib", "gaussian",
                     "--n-calib", "8", "--w-bits", "4", "--a-bits", "4", "--reconstruct", "none", "--json", *flags])
    assert r.code == 0, str(r)
    assert len(seen) == 1
    return json.loads(r.out.strip().splitlines()[-1]), seen[0]


@pytest.fixture(scope="module")
def baseline(random_cifar_like):
    return _w4a4_encodings(random_cifar_like)[1]


def _scales(enc: dict) -> dict[str, np.ndarray]:
    return {name: np.atleast_1d(np.asarray(w["scale"], dtype=np.float64)) for name, w in enc["weights"].items()}


@pytest.mark.parametrize("observer", ["percentile", "mse"])
def test_observer_narrows_activation_ranges(observer, random_cifar_like, baseline):
    result, enc = _w4a4_encodings(random_cifar_like, "--observer", observer)
    assert result["observer"] == observer and enc["config"]["observer"] == observer
    narrower = 0
    for name, q in enc["activations"].items():
        base = baseline["activations"][name]
        if q["role"] == "input":  # the network input's range is the pixel range, whatever the observer
            assert (q["min"], q["max"]) == (base["min"], base["max"])
            continue
        assert base["min"] - 1e-6 <= q["min"] and q["max"] <= base["max"] + 1e-6, name  # inside min/max
        narrower += (q["max"] - q["min"]) < (base["max"] - base["min"]) - 1e-6
    assert narrower >= len(enc["activations"]) // 2, f"{observer}: only {narrower} ranges narrower than min/max"


def test_per_tensor_weights_give_one_scale_per_layer(random_cifar_like, baseline):
    _, enc = _w4a4_encodings(random_cifar_like, "--per-tensor-weights")
    assert enc["config"]["per_channel_weights"] is False
    per_tensor, per_channel = _scales(enc), _scales(baseline)
    assert all(len(np.unique(s)) == 1 for s in per_tensor.values())
    assert all(len(np.unique(s)) > 1 for s in per_channel.values())  # the default really is per channel
    for name, s in per_tensor.items():  # one max-abs scale: the largest of the channels' scales
        assert np.isclose(s.max(), per_channel[name].max(), rtol=1e-5), name


def test_weight_clip_mse_clips_weights_below_their_max_abs(random_cifar_like, baseline):
    _, enc = _w4a4_encodings(random_cifar_like, "--weight-clip", "mse")
    clipped, maxabs = _scales(enc), _scales(baseline)
    smaller = total = 0
    for name, s in clipped.items():
        assert np.all(s <= maxabs[name] * (1 + 1e-6)), name
        smaller += int((s < maxabs[name] * (1 - 1e-4)).sum())
        total += s.size
    assert smaller >= total // 2, f"only {smaller} of {total} channels clipped at 4 bits"


def test_first_last_8bit_keeps_the_edge_layers_at_8_bits(random_cifar_like, baseline):
    _, enc = _w4a4_encodings(random_cifar_like, "--first-last-8bit")
    bits = [w["bits"] for w in enc["weights"].values()]
    assert bits[0] == 8 and bits[-1] == 8 and set(bits[1:-1]) == {4}
    assert {w["bits"] for w in baseline["weights"].values()} == {4}
    # the classifier's input is an 8-bit activation too (4 bits without the flag)
    eight = [n for n, q in enc["activations"].items() if q["bits"] == 8 and q["role"] != "input"]
    assert eight and all(baseline["activations"][n]["bits"] == 4 for n in eight)


# ----------------------------------------------------------------------------- quantize and distill


def test_full_range_weights_use_the_whole_int8_grid(tmp_path):
    """By default the classifier's int8 weights sit on reduce_range's [-64, 64] and convs on pair-safe grids;
    --full-range-weights puts every layer on [-127, 127] (each output channel's largest weight at ±127)."""
    src = export_fp32_onnx(make_tiny(), tmp_path / "tiny.onnx")
    norm = ["--input-mean", "0.5", "--input-std", "0.25", "--calib", "gaussian", "--n-calib", "8"]

    def int8_weights(out: Path, *flags) -> list[np.ndarray]:
        r = run_cli(["quantize", src, "-o", out, *norm, *flags])
        assert r.code == 0, str(r)
        return [onnx.numpy_helper.to_array(t).astype(np.int32) for t in onnx.load(str(out)).graph.initializer
                if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]

    def channel_peaks(weights) -> np.ndarray:  # max |q| per output channel (Gemm weights: rows or columns)
        return np.concatenate([np.abs(w.reshape(w.shape[0], -1)).max(1) if w.ndim == 4 else np.abs(w).max()
                               .reshape(1) for w in weights])

    default = int8_weights(tmp_path / "default.onnx")
    full = int8_weights(tmp_path / "full.onnx", "--full-range-weights")
    assert len(default) == len(full) == 3  # two convs and the classifier
    assert np.all(channel_peaks(full) == 127)
    assert channel_peaks(default).min() <= 64  # the classifier on reduce_range
    assert "full [-127, 127] grid" in json.loads((tmp_path / "full.report.json").read_text())["format"]


def test_quantize_observer_percentile_clips_the_int8_ranges_and_says_so(tmp_path):
    """--observer percentile hands ONNX Runtime's percentile calibrator the images: on Gaussian noise no range is
    wider than min/max's and some are narrower; the report names the rule. mse and .pt2 are refused in one line."""
    src = export_fp32_onnx(make_tiny(), tmp_path / "tiny.onnx")
    norm = ["--input-mean", "0.5", "--input-std", "0.25", "--calib", "gaussian", "--n-calib", "16"]

    def ranges(out: Path, *flags) -> dict:
        r = run_cli(["quantize", src, "-o", out, *norm, *flags])
        assert r.code == 0, str(r)
        return json.loads(out.with_suffix(".report.json").read_text())

    default, clipped = ranges(tmp_path / "mm.onnx"), ranges(tmp_path / "pc.onnx", "--observer", "percentile")
    assert "min/max ranges" in default["format"] and "percentile ranges" in clipped["format"]
    widths = [(hi - lo, clipped["activation_ranges"][k][1] - clipped["activation_ranges"][k][0])
              for k, (lo, hi) in default["activation_ranges"].items() if k in clipped["activation_ranges"]]
    assert widths and all(p <= m * (1 + 1e-6) for m, p in widths) and any(p < m * (1 - 1e-5) for m, p in widths)
    for flags, message in ((["--observer", "mse"], "--observer mse is for models written from gzsq's simulator"),
                           (["--observer", "percentile", "-o", tmp_path / "x.pt2"], "a .pt2 output is calibrated")):
        out = flags[-1] if "-o" in flags else tmp_path / "x.onnx"
        r = run_cli(["quantize", src, "-o", out, *norm, *[f for f in flags if f not in ("-o", out)]])
        assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, str(r)


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory):
    """The tiny CNN at 64×64 input: 64 images hold a quarter of the default preset's pixel budget."""
    net = make_tiny()
    net.input_spec = InputSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return export_fp32_onnx(net, tmp_path_factory.mktemp("tiny64") / "tiny64.onnx")


def _distill_log(model: Path, out: Path, *flags) -> dict:
    r = run_cli(["distill", model, "-o", out, "--n-calib", "64", "--input-mean", "0.5", "--input-std", "0.25",
                 *flags])
    assert r.code == 0, str(r)
    with np.load(out) as z:
        assert z["images"].shape == (64, 3, 64, 64)
        return json.loads(str(z["info"]))


@pytest.mark.parametrize("preset,optimized,steps", [("default", 64, 20), ("fast", 32, 20), ("thorough", 64, 30),
                                                   ("longer", 64, 40)])
def test_preset_sets_the_recipe(preset, optimized, steps, tiny64, tmp_path):
    """default: 20 steps on up to 256·32·32 pixels' worth of images (64 at 64×64); fast: half those pixels
    (32 images optimized, 32 made from them by flips/shifts); thorough: every image, 30 steps; longer: the
    default with 40 steps."""
    info = _distill_log(tiny64, tmp_path / "set.npz", "--preset", preset)
    assert info["meta"]["preset"] == preset
    assert info["log"]["optimized_images"] == optimized
    assert info["log"]["iterations"] == [steps]
    assert info["log"]["recipe"]["distill"]["iterations"] == steps


def test_preset_half_local_distils_two_batches_local_first(tiny64, tmp_path):
    """half-local: the first half of the set with local targets, the second with propagated ones, each optimized
    as a batch of its own (32 + 32 images at 64×64, 20 steps each)."""
    info = _distill_log(tiny64, tmp_path / "set.npz", "--preset", "half-local")
    assert info["meta"]["preset"] == "half-local"
    assert info["log"]["optimized_images"] == 64 and info["log"]["iterations"] == [20, 20]
    assert info["log"]["local_batches"] == 1
    assert info["log"]["recipe"]["targets"]["local_fraction"] == 0.5


def test_preset_half_local_long_distils_the_propagated_half_five_times_longer(tiny64, tmp_path):
    """half-local-long: half-local's two batches, 20 steps on the local one, 100 on the propagated one."""
    info = _distill_log(tiny64, tmp_path / "set.npz", "--preset", "half-local-long")
    assert info["meta"]["preset"] == "half-local-long"
    assert info["log"]["optimized_images"] == 64 and info["log"]["iterations"] == [20, 100]
    assert info["log"]["local_batches"] == 1


def test_preset_local_long_distils_local_targets_for_100_steps(tiny64, tmp_path):
    """local-long: one batch of local targets, 100 steps."""
    info = _distill_log(tiny64, tmp_path / "set.npz", "--preset", "local-long")
    assert info["meta"]["preset"] == "local-long"
    assert info["log"]["iterations"] == [100] and info["log"]["recipe"]["targets"]["local"] is True


def test_long_and_short_spellings_are_the_same_flags(tmp_path, random_cifar_like):
    """--output/-o, --quiet/-q, --verbose/-v, -h/--help."""
    base = ["distill", "cifar10-resnet20-nf", "--calib", "gaussian", "--n-calib", "4", "--resume"]  # a note: no
    quiet = run_cli([*base, "--output", tmp_path / "a.npz", "--quiet"])                           # checkpoint
    loud = run_cli([*base, "-o", tmp_path / "b.npz"])
    assert quiet.code == loud.code == 0 and (tmp_path / "a.npz").exists(), str(quiet)
    assert quiet.err == "" and "ran from the beginning" in loud.err, str(loud)
    evaluate = ["evaluate", "--model", "cifar10-resnet20-nf", "--data", random_cifar_like, "--calib", "gaussian",
                "--n-calib", "4"]
    plain, verbose = run_cli(evaluate), run_cli([*evaluate, "--verbose"])
    assert plain.code == verbose.code == 0
    assert "loaded cifar10-resnet20-nf" in verbose.err and "loaded" not in plain.err
    short, long = run_cli(["evaluate", "-h"]), run_cli(["evaluate", "--help"])
    assert short.code == long.code == 0 and short.out == long.out and "--observer" in short.out


# ------------------------------------------------------------------------------------------ guard

def _options() -> dict[str, list[str]]:
    """Every option string of every command → the commands that take it."""
    found: dict[str, list[str]] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}")
            for option in action.option_strings:
                found.setdefault(option, []).append(name)

    walk(build_parser(), "gzsq")
    return found


def test_every_option_is_exercised_by_some_test():
    """A new flag fails CI until a test mentions it (as a whole token, e.g. `--observer`, not `--observers`)."""
    options = _options()
    assert {"--observer", "--bgr", "--preset", "-o"} <= set(options)  # the walk reaches every subcommand
    text = "\n".join(p.read_text() for p in sorted(TESTS.glob("*.py")))
    unmentioned = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text))
    assert not unmentioned, f"options no test runs: {unmentioned} ({[options[o] for o in unmentioned]})"
