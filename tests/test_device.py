"""--device: CPU by default, auto picks a GPU when there is one, cuda without one is a one-line error;
the caller's model never moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gzsq
from gzsq.device import current, on_device, resolve, use
from gzsq.errors import ConfigError

from .cli_tools import assert_nothing_at, assert_one_line_error, run_cli
from .conftest import RESNET20, make_tiny, needs


def test_cpu_is_the_default_and_auto_falls_back_to_it():
    assert current() == torch.device("cpu")
    assert resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be one of"):
        resolve("tpu")


def test_a_gpu_device_carries_its_index(monkeypatch):
    """torch.cuda.set_device refuses a bare "cuda": on a GPU machine `use("cuda")` failed before any work."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve("cuda") == torch.device("cuda", 0)
    assert resolve("auto") == torch.device("cuda", 0)


def test_cuda_runs_there_or_says_in_one_line_that_there_is_no_gpu(tmp_path):
    common = ["distill", "cifar10-resnet20", "--weights", needs(RESNET20), "--n-calib", "16", "--threads", "1"]
    cpu, gpu = tmp_path / "cpu.npz", tmp_path / "gpu.npz"
    assert run_cli([*common, "-o", cpu]).code == 0
    result = run_cli([*common, "-o", gpu, "--device", "cuda"])
    if torch.cuda.is_available():  # the same start and steps: images differ by float rounding only
        assert result.code == 0, str(result)
        assert np.abs(np.load(gpu)["images"] - np.load(cpu)["images"]).mean() < 0.05
    else:
        assert_one_line_error(result, "--device cuda", "no CUDA GPU")
        assert_nothing_at(gpu)


def test_auto_on_a_cpu_machine_gives_the_cpu_bytes(tmp_path):
    model = make_tiny()
    a = gzsq.distill(model, 8, device="cpu").images
    b = gzsq.distill(model, 8, device="auto").images
    if not torch.cuda.is_available():
        assert torch.equal(a, b)
    else:
        assert (a - b).abs().mean() < 0.05


def test_the_callers_model_stays_where_it_is():
    model = make_tiny()
    with use("cpu"):
        assert on_device(model) is model
    weight = next(model.parameters())
    gzsq.distill(model, 4, device="auto")
    assert next(model.parameters()) is weight and weight.device.type == "cpu"
