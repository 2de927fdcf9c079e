"""End to end, one test per user command, through main(argv)."""

import json

import numpy as np
import pytest

from gzsq.cli import main
from gzsq.config import ReconstructConfig
from gzsq.data import load_dataset

from .conftest import CIFAR_TEST, CIFAR_TRAIN, RESNET20, needs


@pytest.fixture(scope="module")
def small_test_set(tmp_path_factory):
    data = load_dataset(needs(CIFAR_TEST))
    rows = np.arange(0, 10000, 25)  # 400 images, all classes
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, images=np.stack(data.images(rows)), labels=data.labels[rows])
    return path


def _evaluate(args, capsys):
    code = main(["evaluate", "--model", "cifar10-resnet20", "--weights", str(needs(RESNET20)), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_json_last_line(small_test_set, capsys):
    code, out, _ = _evaluate(["--data", str(small_test_set), "--calib", "real", "--calib-data", str(CIFAR_TRAIN),
                              "--n-calib", "64", "--json"], capsys)
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("model", "setting", "calib", "w_bits", "a_bits", "n_calib", "seed", "fp32_top1", "top1",
                "agreement", "seconds"):
        assert key in result
    assert result["setting"] == "bn" and result["n_calib"] == 64
    assert abs(result["top1"] - result["fp32_top1"]) < 3 and result["agreement"] > 95


def test_evaluate_gzsq_bn_free_w4a4_runs(small_test_set, capsys):
    code, out, _ = _evaluate(["--data", str(small_test_set), "--setting", "bn-free", "--calib", "gzsq",
                              "--w-bits", "4", "--a-bits", "4", "--n-calib", "32", "--reconstruct", "none"], capsys)
    assert code == 0 and "quantized top-1" in out and "reconstruct none" in out


def test_evaluate_zeroq_bn_free_refused_in_one_line(small_test_set, capsys):
    code, out, err = _evaluate(["--data", str(small_test_set), "--setting", "bn-free", "--calib", "zeroq"], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gzsq: error: zeroq needs BatchNorm")


@pytest.mark.parametrize("args", [["--w-bits", "9"], ["--a-bits", "x"], ["--data", "/nonexistent.npz"],
                                  ["--threads", "-1"], ["--threads", "two"]])
def test_evaluate_bad_input(args, small_test_set, capsys):
    base = ["--data", str(small_test_set)] if "--data" not in args else []
    code, out, err = _evaluate(base + args, capsys)  # usage errors too: one line, exit 2, no SystemExit
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("gzsq: error: ")


def test_unknown_model_one_line(capsys):
    code = main(["evaluate", "--model", "resnet9000", "--data", "x.npz"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gzsq: error: unknown model")


def test_distill_writes_set_and_preview(tmp_path, capsys):
    out = tmp_path / "set.npz"
    code = main(["distill", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "-o", str(out),
                 "--n-calib", "16", "--preview", str(tmp_path / "grid.png"), "--seed", "1"])
    assert code == 0 and out.exists() and (tmp_path / "grid.png").exists()
    with np.load(out) as z:
        assert z["images"].shape == (16, 3, 32, 32)
        assert json.loads(str(z["info"]))["source"] == "gzsq"


def test_busy_cpu_is_noted_and_threads_applied(tmp_path, capsys, monkeypatch):
    """On a saturated CPU the user hears why the run is slow; --threads is applied to torch (and silences it)."""
    import os

    import torch

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    args = ["distill", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "--n-calib", "4"]
    assert main(args + ["-o", str(tmp_path / "a.npz")]) == 0
    assert "the CPU was busy" in capsys.readouterr().err
    assert main(args + ["-o", str(tmp_path / "a.npz")]) == 2  # exists: the error stays the only line
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    before = torch.get_num_threads()
    try:
        assert main(args + ["-o", str(tmp_path / "b.npz"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2 and "busy" not in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_distill_zeroq_on_bn_free_model_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "set.npz"
    code = main(["distill", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "-o", str(out),
                 "--calib", "zeroq", "--setting", "bn-free"])
    assert code == 2 and not out.exists()
    assert list(tmp_path.iterdir()) == []


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_quantize_writes_an_int8_onnx_model_and_its_report(small_test_set, tmp_path, capsys):
    out = tmp_path / "nf-int8.onnx"
    code = main(["quantize", "cifar10-resnet20-nf", "-o", str(out), "--n-calib", "16",
                 "--eval-data", str(small_test_set), "--keep-fp32", "--json"])
    stdout, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["calib"] == "gzsq-local" and report["setting"] == "bn-free" and report["n_calib"] == 16
    e = report["evaluation"]
    assert e["images"] == 400 and abs(e["int8_top1"] - e["fp32_top1"]) < 3 and e["agreement"] > 90
    import onnxruntime as ort

    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # loads in the real runtime
    ort.InferenceSession(str(tmp_path / "nf-int8.fp32.onnx"), providers=["CPUExecutionProvider"])
    full = json.loads((tmp_path / "nf-int8.report.json").read_text())
    assert full["activation_ranges"]["input"][0] < 0 < full["activation_ranges"]["input"][1]
    assert "FP32 top-1" in (tmp_path / "nf-int8.report.md").read_text()
    # a second run does not overwrite the model unless asked to
    before = out.read_bytes()
    assert main(["quantize", "cifar10-resnet20-nf", "-o", str(out), "--calib", "gaussian"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


def test_quantize_and_evaluate_take_an_onnx_file(tmp_path, capsys):
    from gzsq.export import export_fp32_onnx

    from .conftest import make_tiny

    src = export_fp32_onnx(make_tiny(), tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny-data.npz"
    np.savez(data, images=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), labels=rng.integers(0, 5, 20))
    out = tmp_path / "tiny-int8.onnx"
    assert main(["quantize", str(src), "-o", str(out), "--calib", "gaussian", "--n-calib", "8",
                 "--input-mean", "0.5", "--input-std", "0.25", "--input-resize", "8", "--eval-data", str(data)]) == 0
    assert "agreement" in capsys.readouterr().out and out.exists()
    assert main(["evaluate", "--model", str(src), "--data", str(data), "--calib", "uniform", "--n-calib", "8",
                 "--input-mean", "0.5", "--input-std", "0.25", "--input-resize", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "tiny.onnx"
    calib_set = tmp_path / "tiny-set.npz"  # distill takes the same ONNX input flags
    assert main(["distill", str(src), "-o", str(calib_set), "--calib", "gaussian", "--n-calib", "8",
                 "--input-mean", "0.5", "--input-std", "0.25", "--input-resize", "8"]) == 0
    assert main(["quantize", str(src), "-o", str(tmp_path / "from-set.onnx"), "--calib-set", str(calib_set),
                 "--input-mean", "0.5", "--input-std", "0.25", "--input-resize", "8"]) == 0
    assert "biases corrected" in json.loads((tmp_path / "from-set.report.json").read_text())["format"]
    assert main(["quantize", str(src), "-o", str(tmp_path / "plain.onnx"), "--calib-set", str(calib_set),
                 "--no-bias-correction", "--input-mean", "0.5", "--input-std", "0.25", "--input-resize", "8"]) == 0
    assert "biases corrected" not in json.loads((tmp_path / "plain.report.json").read_text())["format"]


def test_quantize_to_pt2e(small_test_set, tmp_path, capsys):
    out = tmp_path / "nf-int8.pt2"
    assert main(["quantize", "cifar10-resnet20-nf", "-o", str(out), "--calib", "gaussian", "--n-calib", "32",
                 "--eval-data", str(small_test_set), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["backend"] == "pt2e" and out.exists()
    assert abs(report["evaluation"]["int8_top1"] - report["evaluation"]["fp32_top1"]) < 3


def test_quantize_from_a_distilled_set(tmp_path, capsys):
    """Distill once with `gzsq distill`, quantize from the file: the report says where the images came from."""
    calib_set = tmp_path / "set.npz"
    assert main(["distill", "cifar10-resnet20-nf", "-o", str(calib_set), "--n-calib", "8"]) == 0
    out = tmp_path / "q.onnx"
    assert main(["quantize", "cifar10-resnet20-nf", "-o", str(out), "--calib-set", str(calib_set), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["calib"] == "gzsq-local" and report["n_calib"] == 8 and report["calib_set"] == str(calib_set)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((2, 3, 8, 8), np.float32), info=json.dumps({"source": "gzsq", "seed": 0}))
    assert main(["quantize", "cifar10-resnet20-nf", "-o", str(tmp_path / "w.onnx"), "--calib-set", str(wrong)]) == 2
    assert "distill the set from this model" in capsys.readouterr().err
    assert not (tmp_path / "w.onnx").exists()


def test_bench_times_the_main_job_and_both_models(capsys):
    code = main(["bench", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "--calib", "gaussian",
                 "--n-calib", "8", "--repeats", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["calib"] == "gaussian" and result["n_calib"] == 8 and result["setting"] == "bn"
    assert [row["batch"] for row in result["latency"]] == [1, 32]
    s = result["seconds"]
    assert s["quantize_total"] >= s["calibration_data"] + s["quantize_int8"]


def test_bench_passes_setting_and_calib_data_on(capsys):
    """`--setting` and `--calib-data` reach the main job: real images calibrate, the folded net is what is read."""
    code = main(["bench", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "--calib", "real",
                 "--calib-data", str(needs(CIFAR_TRAIN)), "--setting", "bn-free", "--n-calib", "8", "--repeats", "1",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["calib"] == "real" and result["setting"] == "bn-free"


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--weights", "/nonexistent.th"]])
def test_bench_bad_input_one_line(args, capsys):
    code = main(["bench", "cifar10-resnet20", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("gzsq: error: ")


def test_images_of_the_models_size_are_used_as_they_are(small_test_set, tmp_path, capsys):
    """A 32×32 ONNX classifier on 32×32 CIFAR images: no resize-and-crop by default, so its FP32 top-1 is
    the network's on the images as they are (resizing to 36 and cropping back once cost 2.7 pt)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    onnx_path = tmp_path / "cnn.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(onnx_path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    data = np.load(small_test_set)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # the --input-* defaults
    x = torch.from_numpy(((data["images"] / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        expected = float((net(x).argmax(1).numpy() == data["labels"]).mean() * 100)
    code = main(["evaluate", "--model", str(onnx_path), "--data", str(small_test_set), "--calib", "gaussian",
                 "--n-calib", "8", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["fp32_top1"] == round(expected, 2)
    assert result["preprocessing"] == "all 400 images used at their size (32×32), only normalized"


def test_quantize_leaves_the_users_augmented_model_alone(tmp_path, monkeypatch, capsys):
    """ONNX Runtime's calibrator once wrote augmented_model.onnx into the working directory; a user's file of
    that name must survive `gzsq quantize` (its scratch files live in private temporary folders)."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "augmented_model.onnx"
    mine.write_bytes(b"the user's own file")
    code = main(["quantize", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "-o", "r20.onnx",
                 "--calib", "gaussian", "--n-calib", "8"])
    capsys.readouterr()
    assert code == 0
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["augmented_model.onnx", "r20.onnx", "r20.report.json",
                                                          "r20.report.md"]


def test_a_successful_run_prints_only_gzsq_on_stderr(tmp_path):
    """torch, torchao and ONNX Runtime warn about things a user cannot act on (deprecations, optional kernels,
    a temp file's suffix): in a real process, without -v, stderr stays empty for a quiet successful run."""
    from .cli_tools import run_cli_process

    out = tmp_path / "r20.pt2"
    result = run_cli_process(["quantize", "cifar10-resnet20", "--weights", needs(RESNET20), "-o", out,
                              "--calib", "gaussian", "--n-calib", "8", "--threads", "1"])
    assert result.code == 0, str(result)
    assert result.err == "", str(result)
    assert out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_evaluate_reconstructs_below_8_bits(small_test_set, capsys):
    """`--reconstruct` auto picks block reconstruction at W4A4 and leaves W8A8 alone; a short run (10 steps per
    block, 32 gaussian images) must not end below round-to-nearest's agreement by more than a few images."""
    rows = {}
    for method in ("none", "auto"):
        code, out, err = _evaluate(["--data", str(small_test_set), "--calib", "gaussian", "--n-calib", "32",
                                    "--w-bits", "4", "--a-bits", "4", "--reconstruct", method,
                                    "--reconstruct-iters", "10", "--json"], capsys)
        assert code == 0, err
        rows[method] = json.loads(out.strip().splitlines()[-1])
    assert rows["none"]["reconstruct"] == "none" and rows["auto"]["reconstruct"] == "block"
    # round to nearest starts from min/max ranges, reconstruction from quantize's MSE-clipped start
    assert (rows["none"]["observer"], rows["none"]["weight_clip"]) == ("minmax", "maxabs")
    assert (rows["auto"]["observer"], rows["auto"]["weight_clip"]) == ("mse", "mse")
    assert "reconstruct" in rows["auto"]["seconds"]
    assert rows["auto"]["agreement"] >= rows["none"]["agreement"] - 2.0, rows
    code, out, _ = _evaluate(["--data", str(small_test_set), "--calib", "gaussian", "--n-calib", "8", "--json"],
                             capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["reconstruct"] == "none"


def test_reconstruct_loss_and_act_floor_reach_the_reconstruction(small_test_set, capsys):
    """`--reconstruct-loss` and `--reconstruct-act-floor` are what the job's reconstruction runs with (the report's
    `reconstruction` holds the whole config); residual-normalized and no floor are the defaults. A negative floor is
    a one-line usage error."""
    losses, floors = {}, []
    for flag in ([], ["--reconstruct-loss", "channel-normalized"],
                 ["--reconstruct-loss", "mse", "--reconstruct-act-floor", "0.75"]):
        code, out, err = _evaluate(["--data", str(small_test_set), "--calib", "gaussian", "--n-calib", "8",
                                    "--w-bits", "4", "--a-bits", "4", "--reconstruct-iters", "2", *flag, "--json"],
                                   capsys)
        assert code == 0, err
        config = json.loads(out.strip().splitlines()[-1])["reconstruction"]
        losses[tuple(flag)], floors = config["loss"], floors + [config["act_scale_floor"]]
    assert list(losses.values()) == ["residual-normalized", "channel-normalized", "mse"]
    assert floors == [ReconstructConfig.act_scale_floor, ReconstructConfig.act_scale_floor, 0.75]
    code, _, err = _evaluate(["--data", str(small_test_set), "--reconstruct-act-floor", "-1"], capsys)
    assert code == 2 and "--reconstruct-act-floor" in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_picks_the_images_quantize_picks_for_a_reconstruction_job(small_test_set, capsys):
    """`auto` is resolved for the job: with reconstruction, gzsq's half-local set, as `gzsq quantize` uses."""
    code, out, err = _evaluate(["--data", str(small_test_set), "--n-calib", "8", "--w-bits", "4", "--a-bits", "4",
                                "--reconstruct", "block", "--reconstruct-iters", "2", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["calib"] == "gzsq-half-local"
