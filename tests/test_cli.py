"""End to end, one test per user command, through main(argv)."""

import json

import numpy as np
import pytest

from gzsq.cli import main
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
                              "--w-bits", "4", "--a-bits", "4", "--n-calib", "32"], capsys)
    assert code == 0 and "quantized top-1" in out


def test_evaluate_zeroq_bn_free_refused_in_one_line(small_test_set, capsys):
    code, out, err = _evaluate(["--data", str(small_test_set), "--setting", "bn-free", "--calib", "zeroq"], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gzsq: error: zeroq needs BatchNorm")


@pytest.mark.parametrize("args", [["--w-bits", "9"], ["--a-bits", "x"], ["--data", "/nonexistent.npz"]])
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


def test_distill_zeroq_on_bn_free_model_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "set.npz"
    code = main(["distill", "cifar10-resnet20", "--weights", str(needs(RESNET20)), "-o", str(out),
                 "--calib", "zeroq", "--setting", "bn-free"])
    assert code == 2 and not out.exists()
    assert list(tmp_path.iterdir()) == []
