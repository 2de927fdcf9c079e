"""Bad input, through the CLI and the Python API .

The contract for every case: a non-zero exit (2; 130 for Ctrl-C), exactly ONE line on stderr,
`gzsq: error: <what is wrong and what to do>`, no traceback, and nothing at the output path
(no half-written file, no temp file beside it). The Python API raises a `GzsqError` subclass
with a one-line message instead.

How to add a case (e.g. for `gzsq quantize` or ONNX input) — helpers live in tests/cli_tools.py:

    def test_quantize_refuses_malformed_onnx(tmp_path):
        bad = tmp_path / "m.onnx"; bad.write_bytes(b"garbage")
        out = tmp_path / "q.onnx"
        r = run_cli(["quantize", bad, "-o", out])                   # in-process; r.code, r.out, r.err
        assert_one_line_error(r, "m.onnx")                          # exit 2, one line naming the problem
        assert_nothing_at(out)                                      # no output, no temp file beside it

`run_cli_process` does the same in a real subprocess (for signals); `ensure_output_path(path,
force=...)` in gzsq.atomic is the check a command calls before its long work (refuses an existing
output without --force and an unwritable folder), and `atomic_path(path)` the way to write.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gzsq.config import QuantConfig
from gzsq.data import load_dataset
from gzsq.distillation import loop as distill_loop
from gzsq.sources.saved import load_calibration
from gzsq.errors import (ConfigError, DataError, GzsqError, ModelLoadError, OutputError, UnsupportedModelError)
from gzsq.models import InputSpec, load_model, read_checkpoint, validate_model
from gzsq.quantization.sim import quantize
from gzsq.sources import make_calibration

from .cli_tools import (assert_nothing_at, assert_one_line_error, run_cli, run_cli_process)
from .conftest import RESNET20, SHARED, make_tiny, needs

RESNET32 = SHARED / "models/cifar10/resnet32.th"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def state20():
    """ResNet-20's state dict (a fresh copy per use: tests corrupt it)."""
    return torch.load(needs(RESNET20), map_location="cpu", weights_only=True)["state_dict"]


def _distill(tmp_path, *extra, weights=None, model="cifar10-resnet20", out=None):
    """`gzsq distill` with the instant gaussian source unless a test names another; → (result, out path)."""
    out = out or tmp_path / "out" / "set.npz"
    args = ["distill", model, "-o", out, "--n-calib", "4"]
    if weights is not None or model == "cifar10-resnet20":
        args += ["--weights", weights if weights is not None else needs(RESNET20)]
    if "--calib" not in extra:
        args += ["--calib", "gaussian"]
    return run_cli(args + list(extra)), out


def _evaluate(*extra, weights=None):
    return run_cli(["evaluate", "--model", "cifar10-resnet20", "--weights", weights or needs(RESNET20),
                    "--calib", "gaussian", "--n-calib", "4", *extra])


def _npz(path: Path, images, labels) -> Path:
    np.savez(path, images=images, labels=labels)
    return path


def _cifar_like(n=8, size=32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class _Touch:
    """Unpickling this would create a marker file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- checkpoints


def test_missing_checkpoint(tmp_path):
    r, out = _distill(tmp_path, weights=tmp_path / "nope.th")
    assert_one_line_error(r, "nope.th", "does not exist")
    assert_nothing_at(out)


def test_empty_checkpoint(tmp_path):
    (tmp_path / "empty.th").write_bytes(b"")
    r, out = _distill(tmp_path, weights=tmp_path / "empty.th")
    assert_one_line_error(r, "empty.th", "is empty")
    assert_nothing_at(out)


def test_truncated_checkpoint(tmp_path):
    data = needs(RESNET20).read_bytes()
    (tmp_path / "half.th").write_bytes(data[: len(data) // 2])
    r, out = _distill(tmp_path, weights=tmp_path / "half.th")
    assert_one_line_error(r, "half.th", "cannot read checkpoint")
    assert_nothing_at(out)


def test_truncated_zip_checkpoint(tmp_path, state20):
    full = tmp_path / "full.pt"
    torch.save({"state_dict": state20}, full)
    data = full.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) * 2 // 3])
    r, out = _distill(tmp_path, weights=tmp_path / "cut.pt")
    assert_one_line_error(r, "cut.pt", "cannot read checkpoint")
    assert_nothing_at(out)


def test_random_bytes_checkpoint(tmp_path):
    (tmp_path / "noise.th").write_bytes(np.random.default_rng(0).bytes(4096))
    r, out = _distill(tmp_path, weights=tmp_path / "noise.th")
    assert_one_line_error(r, "noise.th", "not a PyTorch checkpoint")
    assert_nothing_at(out)


def test_checkpoint_is_a_folder(tmp_path):
    (tmp_path / "ckpt").mkdir()
    r, out = _distill(tmp_path, weights=tmp_path / "ckpt")
    assert_one_line_error(r, "not a file")
    assert_nothing_at(out)


@pytest.mark.parametrize("kind", ["torch-zip", "raw-pickle-v2", "raw-pickle-v4"])
def test_pickle_that_would_run_code_is_refused_not_run(tmp_path, kind):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.th"
    if kind == "torch-zip":
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Touch(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_System(marker), protocol=2 if kind.endswith("v2") else 4))
    r, out = _distill(tmp_path, weights=path)
    line = assert_one_line_error(r, "evil.th", "cannot read checkpoint")
    assert not marker.exists(), "the checkpoint's code ran"
    if kind != "raw-pickle-v4":  # v4 is refused at its first opcode, before any global is named
        assert "did not run it" in line
    assert_nothing_at(out)
    with pytest.raises(ModelLoadError):  # the API too
        read_checkpoint(path)
    assert not marker.exists()


def test_onnx_file_as_weights(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX ModelProto starts with ir_version (field 1)
    r, out = _distill(tmp_path, weights=fake)
    assert_one_line_error(r, "model.onnx", "ONNX")
    assert_nothing_at(out)


def test_weights_of_another_architecture(tmp_path):
    r, out = _distill(tmp_path, weights=needs(RESNET32))
    assert_one_line_error(r, "does not match the architecture")
    assert_nothing_at(out)


def test_weights_with_a_wrong_shape(tmp_path, state20):
    state = dict(state20)
    state["module.linear.weight"] = torch.zeros(7, 64)
    torch.save({"state_dict": state}, tmp_path / "w.th")
    r, out = _distill(tmp_path, weights=tmp_path / "w.th")
    assert_one_line_error(r, "linear.weight", "(7, 64) vs (10, 64)")
    assert_nothing_at(out)


@pytest.mark.parametrize("payload", [[torch.zeros(3)], torch.zeros(3), {"a": 1}, {}, {3: torch.zeros(1)}])
def test_checkpoint_that_is_not_a_state_dict(tmp_path, payload):
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(ModelLoadError, match="not a state dict") as err:
        read_checkpoint(tmp_path / "x.pt")
    assert "\n" not in str(err.value)


def test_complex_weights_do_not_fit(tmp_path, state20):  # torch would silently drop the imaginary part
    state = dict(state20)
    state["module.linear.bias"] = torch.zeros(10, dtype=torch.complex64)
    torch.save({"state_dict": state}, tmp_path / "c.th")
    with pytest.raises(ModelLoadError) as err:
        load_model("cifar10-resnet20", tmp_path / "c.th")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key,value", [("module.conv1.weight", float("nan")),
                                       ("module.bn1.running_var", float("inf"))])
def test_nan_inf_weights(tmp_path, state20, key, value):
    state = {k: v.clone() for k, v in state20.items()}
    state[key].view(-1)[0] = value
    torch.save({"state_dict": state}, tmp_path / "nan.th")
    r, out = _distill(tmp_path, weights=tmp_path / "nan.th")
    assert_one_line_error(r, "NaN/Inf", key.removeprefix("module."))
    assert_nothing_at(out)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("name,fragment", [("resnet9000", "unknown model"), ("cifar10-resnet21", "6n+2"),
                                           ("cifar10-resnet6002", "deepest")])
def test_bad_model_names(tmp_path, name, fragment):
    r, out = _distill(tmp_path, model=name, weights=needs(RESNET20))
    assert_one_line_error(r, fragment)
    assert_nothing_at(out)


def _with_spec(net: nn.Module, size: int = 8) -> nn.Module:
    net.input_spec = InputSpec(size=size, mean=(0.5,) * 3, std=(0.25,) * 3)
    return net.eval()


def test_api_model_without_conv_or_linear():
    net = _with_spec(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.ReLU()))
    with pytest.raises(UnsupportedModelError, match="no Conv2d or Linear"):
        make_calibration("gaussian", net, 4)
    with pytest.raises(UnsupportedModelError, match="no Conv2d or Linear"):
        quantize(net, torch.zeros(2, 3, 8, 8))


def test_api_input_size_that_does_not_fit():
    net = _with_spec(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)), size=16)
    with pytest.raises(UnsupportedModelError, match="does not accept its input size 3×16×16") as err:
        make_calibration("gzsq", net, 4)
    assert "\n" not in str(err.value)
    with pytest.raises(UnsupportedModelError, match="calibration images are 3×8×8"):
        quantize(net, torch.zeros(2, 3, 8, 8))


def test_api_model_that_does_not_return_logits():
    net = _with_spec(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)))
    with pytest.raises(UnsupportedModelError, match="N×classes logits"):
        validate_model(net)


def test_api_model_without_input_spec():
    with pytest.raises(ConfigError, match="input_spec"):
        make_calibration("gaussian", nn.Sequential(nn.Flatten(), nn.Linear(3, 2)).eval(), 4)


def test_api_nan_weights_in_a_user_module():
    net = make_tiny()
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(UnsupportedModelError, match="NaN/Inf in conv2.weight"):
        make_calibration("gaussian", net, 4)
    with pytest.raises(UnsupportedModelError, match="NaN/Inf"):
        quantize(net, torch.zeros(2, 3, 8, 8))


def test_api_untraceable_model_is_one_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            x = x.mean((2, 3))
            return self.fc(x) if x.sum() > 0 else -self.fc(x)  # data-dependent: fx cannot trace it

    with pytest.raises(UnsupportedModelError, match="cannot trace") as err:
        quantize(_with_spec(Branchy()), torch.zeros(2, 3, 8, 8))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- bits, n-calib, seed


@pytest.mark.parametrize("flag", ["--w-bits", "--a-bits"])
@pytest.mark.parametrize("value", ["0", "1", "9", "33", "eight", "4.5"])
def test_bits_out_of_range_cli(flag, value):
    r = _evaluate("--data", "unused.npz", flag, value)
    assert_one_line_error(r, flag, "bits")


@pytest.mark.parametrize("value", [0, 1, 9, 33, "8", 4.5, True, None])
def test_bits_out_of_range_api(value):
    with pytest.raises(ConfigError, match="w_bits") as err:
        QuantConfig(w_bits=value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value,fragment", [("0", "positive"), ("-5", "positive"), ("1000000000", "at most 100000"),
                                            ("many", "positive integer")])
def test_n_calib_out_of_range_cli(tmp_path, value, fragment):
    r, out = _distill(tmp_path, "--n-calib", value)
    assert_one_line_error(r, "--n-calib", fragment)
    assert_nothing_at(out)


@pytest.mark.parametrize("n,fragment", [(0, "positive"), (-1, "positive"), (10**9, "at most"), (2.5, "integer")])
def test_n_calib_out_of_range_api(tiny, n, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_calibration("gaussian", tiny, n)


@pytest.mark.parametrize("seed", ["-1", "x", str(2**40)])
def test_bad_seed(tmp_path, seed):
    r, out = _distill(tmp_path, "--seed", seed)
    assert_one_line_error(r, "--seed")
    assert_nothing_at(out)
    with pytest.raises(ConfigError, match="seed"):
        make_calibration("gaussian", make_tiny(), 2, seed=-1)


# ---------------------------------------------------------------- data files


def test_missing_data_file():
    assert_one_line_error(_evaluate("--data", "/nonexistent/test.npz"), "does not exist")


def test_data_of_the_wrong_format(tmp_path):
    (tmp_path / "test.csv").write_text("a,b\n1,2\n")
    assert_one_line_error(_evaluate("--data", tmp_path / "test.csv"), "unknown dataset format")


def test_npz_that_is_not_a_zip(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    assert_one_line_error(_evaluate("--data", tmp_path / "bad.npz"), "cannot read")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    images = np.empty(2, dtype=object)
    np.savez(tmp_path / "obj.npz", images=images, labels=np.zeros(2, int))
    assert_one_line_error(_evaluate("--data", tmp_path / "obj.npz"), "obj.npz")


def test_npz_with_wrong_keys(tmp_path):
    np.savez(tmp_path / "k.npz", x=np.zeros(3))
    assert_one_line_error(_evaluate("--data", tmp_path / "k.npz"), "'images'", "'labels'")


@pytest.mark.parametrize("images", [np.zeros((4, 32, 32), np.uint8), np.zeros((4, 32, 32, 3), np.float32),
                                    np.zeros((0, 32, 32, 3), np.uint8), np.zeros((4, 32, 32, 1), np.uint8)])
def test_npz_images_of_wrong_shape_or_type(tmp_path, images):
    path = _npz(tmp_path / "s.npz", images, np.zeros(len(images), int))
    assert_one_line_error(_evaluate("--data", path), "uint8 N×H×W×3")


@pytest.mark.parametrize("labels,fragment", [(np.full(8, 10), "label 10 is out of range"),
                                             (np.full(8, -1), ">= 0"), (np.zeros(5, int), "8 images but 5 labels"),
                                             (np.zeros(8) + 0.5, "integer"), (np.zeros((8, 2), int), "1-D")])
def test_npz_bad_labels(tmp_path, labels, fragment):
    path = _npz(tmp_path / "l.npz", _cifar_like(), labels)
    assert_one_line_error(_evaluate("--data", path), fragment)


def test_images_of_a_size_the_model_does_not_take(tmp_path):
    path = _npz(tmp_path / "big.npz", _cifar_like(size=64), np.zeros(8, int))
    assert_one_line_error(_evaluate("--data", path), "64×64×3", "32×32×3")
    r, out = _distill(tmp_path, "--calib", "real", "--calib-data", path)  # the same through a calibration set
    assert_one_line_error(r, "64×64×3")
    assert_nothing_at(out)


@pytest.mark.parametrize("csv,fragment", [("file,label\na.png,cat\n", "not an integer"),
                                          ("name,class\na.png,1\n", "columns 'file' and 'label'"),
                                          ("file,label\n../outside.png,1\n", "outside the dataset folder"),
                                          ("file,label\n/etc/hostname,1\n", "outside the dataset folder"),
                                          ("file,label\nmissing.png,1\n", "missing files"),
                                          ("file,label\n", "at least one row"),
                                          ("file,label\na.png,999999999999999999999\n", "plausible class index")])
def test_folder_with_a_bad_labels_csv(tmp_path, csv, fragment):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "labels.csv").write_text(csv)
    r, out = _distill(tmp_path, "--calib", "real", "--calib-data", folder)
    assert_one_line_error(r, fragment)
    assert_nothing_at(out)


def test_labels_csv_that_is_not_text(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "labels.csv").write_bytes(b"file,label\n\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset(folder)
    assert "\n" not in str(err.value)


def test_damaged_tar(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = np.random.default_rng(0).bytes(20000)
        info = tarfile.TarInfo("train/a/0.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "d.tar.gz").write_bytes(buf.getvalue()[:-300])
    r, out = _distill(tmp_path, "--calib", "real", "--calib-data", tmp_path / "d.tar.gz")
    assert_one_line_error(r, "d.tar.gz")
    assert_nothing_at(out)


def test_tar_whose_image_is_not_an_image(tmp_path):
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        for name in ("train/a/0.jpg", "train/b/0.jpg", "train/b/1.jpg", "train/a/1.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"hello"))
    r, out = _distill(tmp_path, "--calib", "real", "--calib-data", tmp_path / "t.tar")
    assert_one_line_error(r, "cannot decode image")
    assert_nothing_at(out)


def test_calibration_set_file_that_is_not_one(tmp_path):
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 3, 8, 8), np.float32), info="[1, 2]")
    with pytest.raises(DataError, match="not a set written by gzsq"):
        load_calibration(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="cannot read calibration set"):
        load_calibration(tmp_path / "d.npz")


# ---------------------------------------------------------------- output paths


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder nobody may create files in; root ignores permission bits, so fall back to /sys."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        (d / "probe").touch()
        (d / "probe").unlink()
    except OSError:
        yield d
    else:
        candidate = Path("/sys/kernel")
        try:
            (candidate / "gzsq-probe").touch()
        except OSError:
            yield candidate
        else:  # pragma: no cover - a system where even /sys is writable
            pytest.skip("no unwritable folder available to this user")
    finally:
        d.chmod(0o700)


def test_unwritable_output_folder(tmp_path, unwritable_dir):
    out = unwritable_dir / "set.npz"
    r, _ = _distill(tmp_path, out=out)
    assert_one_line_error(r, "cannot write to folder", str(unwritable_dir))
    assert not out.exists()


def test_output_under_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    r, _ = _distill(tmp_path, out=tmp_path / "file.txt" / "set.npz")
    assert_one_line_error(r, "is a file, not a folder")


def test_output_is_a_folder(tmp_path):
    (tmp_path / "out").mkdir()
    r, _ = _distill(tmp_path, out=tmp_path / "out")
    assert_one_line_error(r, "is a folder")


def test_existing_output_is_refused_unless_force(tmp_path):
    out = tmp_path / "set.npz"
    out.write_bytes(b"precious")
    r, _ = _distill(tmp_path, out=out)
    assert_one_line_error(r, "already exists", "--force")
    assert out.read_bytes() == b"precious"
    r, _ = _distill(tmp_path, "--force", out=out)
    assert r.code == 0 and out.read_bytes() != b"precious", str(r)
    assert np.load(out)["images"].shape == (4, 3, 32, 32)


def test_existing_preview_is_refused_before_any_work(tmp_path):
    (tmp_path / "grid.png").write_bytes(b"old")
    r, out = _distill(tmp_path, "--preview", tmp_path / "grid.png")
    assert_one_line_error(r, "grid.png", "already exists")
    assert_nothing_at(out)
    assert (tmp_path / "grid.png").read_bytes() == b"old"


def test_api_ensure_output_path(tmp_path):
    from gzsq.atomic import ensure_output_path

    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists"):
        ensure_output_path(tmp_path / "m.onnx")
    assert ensure_output_path(tmp_path / "m.onnx", force=True) == tmp_path / "m.onnx"
    assert ensure_output_path(tmp_path / "new" / "dir" / "q.onnx").parent.is_dir()


# ---------------------------------------------------------------- divergence, interrupts, usage


def test_diverging_distillation_stops_with_the_reason(tmp_path, monkeypatch):
    def nan_loss(m, s, mu, sigma):
        return (m - mu).abs().mean() * float("nan")

    monkeypatch.setitem(distill_loop.LOSSES, "kl", nan_loss)
    r, out = _distill(tmp_path, "--calib", "gzsq")
    assert_one_line_error(r, "diverged", "loss became nan", "lower the learning rate")
    assert_nothing_at(out, Path(f"{out}.partial"))


def test_ctrl_c_in_process_leaves_no_output(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(distill_loop.LOSSES, "kl", interrupt)
    r, out = _distill(tmp_path, "--calib", "gzsq")
    assert_one_line_error(r, "interrupted", code=130)
    assert_nothing_at(out)


@pytest.mark.parametrize("args,fragment", [([], "required: COMMAND"), (["frobnicate"], "invalid choice"),
                                           (["distill"], "required: MODEL"), (["evaluate", "--model", "x"], "--data"),
                                           (["distill", "m", "-o", "x.npz", "--bogus"], "unrecognized arguments"),
                                           (["evaluate", "--model", "x", "--data", "y", "--calib", "magic"],
                                            "invalid choice: 'magic'")])
def test_usage_errors_are_one_line(args, fragment):
    assert_one_line_error(run_cli(args), fragment, "--help")


def test_unknown_preset(tmp_path):
    r, out = _distill(tmp_path, "--calib", "gzsq", "--preset", "fancy")
    assert_one_line_error(r, "unknown gzsq preset 'fancy'")
    assert_nothing_at(out)


def test_real_calibration_without_data(tmp_path):
    r, out = _distill(tmp_path, "--calib", "real")
    assert_one_line_error(r, "--calib-data")
    assert_nothing_at(out)


def test_bugs_keep_their_traceback(tmp_path, monkeypatch):
    """Only GzsqError is turned into one line; anything else is a bug and must stay visible."""
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("gzsq.sources.noise.input_shape", broken)
    with pytest.raises(ZeroDivisionError):
        run_cli(["distill", "cifar10-resnet20", "--weights", needs(RESNET20), "-o", tmp_path / "s.npz",
                 "--calib", "gaussian", "--n-calib", "2"])
    assert_nothing_at(tmp_path / "s.npz")


def test_api_errors_are_gzsq_errors_with_one_line(tmp_path):
    """A sample of API calls on bad input: every one raises a GzsqError whose message is one line."""
    calls = [lambda: load_model("cifar10-resnet20", tmp_path / "none.th"),
             lambda: load_dataset(tmp_path / "none.npz"),
             lambda: make_calibration("nonsense", make_tiny(), 2),
             lambda: make_calibration("zeroq", make_tiny(norm=False), 2)]
    for call in calls:
        with pytest.raises(GzsqError) as err:
            call()
        assert "\n" not in str(err.value)


def test_help_still_works():
    r = run_cli(["distill", "--help"])
    assert r.code == 0 and "--resume" in r.out and "--force" in r.out


def test_subprocess_error_is_one_line_without_warnings(tmp_path):
    """In a real process (warnings and all), a refused pickle is still exactly one stderr line."""
    marker = tmp_path / "PWNED"
    torch.save({"x": _Touch(marker)}, tmp_path / "evil.th")
    out = tmp_path / "set.npz"
    r = run_cli_process(["distill", "cifar10-resnet20", "--weights", tmp_path / "evil.th", "-o", out])
    assert_one_line_error(r, "did not run it")
    assert not marker.exists()
    assert_nothing_at(out)


# ---------------------------------------------------------------- gzsq quantize and ONNX input


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from gzsq.export import export_fp32_onnx

    return export_fp32_onnx(make_tiny(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _onnx_graph(path, nodes, inputs, outputs, inits=()):
    import onnx
    from onnx import helper

    proto = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, path)
    return path


def _vi(name, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _quantize(tmp_path, model, *args):
    out = tmp_path / "q.onnx"
    return run_cli(["quantize", model, "-o", out, "--calib", "gaussian", "--n-calib", "4", *args]), out


@pytest.mark.parametrize("content", [b"", b"garbage, not protobuf", b"\x08\x07\x12\x04junk" * 3])
def test_quantize_refuses_malformed_onnx(tmp_path, content):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(content)
    r, out = _quantize(tmp_path, bad)
    assert_one_line_error(r, "m.onnx")
    assert_nothing_at(out)


def test_quantize_names_an_operator_the_converter_cannot_handle(tmp_path):
    from onnx import helper, numpy_helper

    path = _onnx_graph(tmp_path / "erf.onnx", [helper.make_node("Conv", ["x", "w"], ["c"]),
                                               helper.make_node("Erf", ["c"], ["y"])],
                       [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 2, 8, 8])],
                       [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    r, out = _quantize(tmp_path, path)
    assert_one_line_error(r, "Erf", "not supported")
    assert_nothing_at(out)


def test_quantize_refuses_onnx_without_weight_layers(tmp_path):
    from onnx import helper

    path = _onnx_graph(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                       [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 3, 8, 8])])
    r, out = _quantize(tmp_path, path)
    assert_one_line_error(r, "no conv")
    assert_nothing_at(out)


def test_quantize_refuses_onnx_with_nan_weights(tmp_path):
    from onnx import helper, numpy_helper

    w = np.ones((2, 3, 1, 1), np.float32)
    w[0, 0] = np.nan
    path = _onnx_graph(tmp_path / "nan.onnx", [helper.make_node("Conv", ["x", "w"], ["c"]),
                                               helper.make_node("GlobalAveragePool", ["c"], ["p"]),
                                               helper.make_node("Flatten", ["p"], ["y"])],
                       [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 2])], [numpy_helper.from_array(w, "w")])
    r, out = _quantize(tmp_path, path)
    assert_one_line_error(r, "nan")
    assert_nothing_at(out)


@pytest.mark.parametrize("shape, fragment", [([1, 48], "rank 2"), ([1, 5, 8, 8], "layout"),
                                             ([1, 3, 8, 6], "square")])
def test_quantize_refuses_onnx_inputs_that_are_not_images(tmp_path, shape, fragment):
    from onnx import helper

    path = _onnx_graph(tmp_path / "odd.onnx", [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", shape)],
                       [_vi("y", shape)])
    r, out = _quantize(tmp_path, path)
    assert_one_line_error(r, fragment)
    assert_nothing_at(out)


def test_quantize_refuses_an_existing_output_without_force(tmp_path, tiny_onnx):
    out = tmp_path / "q.onnx"
    out.write_bytes(b"keep me")
    r, _ = _quantize(tmp_path, tiny_onnx)
    assert_one_line_error(r, "already exists", "--force")
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("name", ["q.txt", "q"])
def test_quantize_refuses_an_output_without_a_model_suffix(tmp_path, tiny_onnx, name):
    r = run_cli(["quantize", tiny_onnx, "-o", tmp_path / name, "--calib", "gaussian"])
    assert_one_line_error(r, ".onnx", ".pt2")
    assert_nothing_at(tmp_path / name)


def test_quantize_refuses_an_output_folder_that_is_a_file(tmp_path, tiny_onnx):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli(["quantize", tiny_onnx, "-o", blocker / "q.onnx", "--calib", "gaussian"])
    assert_one_line_error(r, "is a file")


@pytest.mark.parametrize("args, fragment", [(["--bits", "8"], "unrecognized arguments: --bits"), (["--input-mean", "a,b"], "three numbers"),
                                            (["--input-layout", "chw"], "--input-layout"),
                                            (["--n-calib", "0"], "positive")])
def test_quantize_bad_flags_are_one_line(tmp_path, tiny_onnx, args, fragment):
    r, out = _quantize(tmp_path, tiny_onnx, *args)
    assert_one_line_error(r, fragment)
    assert_nothing_at(out)


def test_quantize_checks_eval_data_before_the_work(tmp_path, tiny_onnx):
    bad = tmp_path / "data.npz"
    np.savez(bad, images=np.zeros((3, 8, 8, 3), np.uint8), labels=np.zeros(2, np.int64))  # 3 images, 2 labels
    r, out = _quantize(tmp_path, tiny_onnx, "--eval-data", bad, "--input-resize", "8")
    assert_one_line_error(r, "3 images", "2 labels")
    assert_nothing_at(out, tmp_path / "q.report.json", tmp_path / "q.report.md")


def test_quantize_ctrl_c_leaves_nothing(tmp_path, tiny_onnx, monkeypatch):
    import gzsq.pipeline

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gzsq.pipeline, "activation_ranges", interrupt)  # after the model file is written
    r, out = _quantize(tmp_path, tiny_onnx, "--input-resize", "8")
    assert_one_line_error(r, "interrupted", code=130)
    assert_nothing_at(out, tmp_path / "q.report.json", tmp_path / "q.report.md")


def test_onnx_as_weights_of_a_zoo_model_is_refused(tmp_path, tiny_onnx):
    r = run_cli(["quantize", "cifar10-resnet20", "--weights", tiny_onnx, "-o", tmp_path / "q.onnx"])
    assert_one_line_error(r, "looks like an ONNX model", "not a PyTorch state_dict")
    assert_nothing_at(tmp_path / "q.onnx")
