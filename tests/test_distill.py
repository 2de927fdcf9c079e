"""The distillation engine: deterministic, early-stopping, divergence caught, sets saved."""

import numpy as np
import pytest
import torch

from gzsq.distill.io import load_calibration, save_calibration, save_preview
from gzsq.distill.loop import DistillConfig, Objective, distill_images
from gzsq.errors import ConfigError, DistillationDivergedError
from gzsq.fold import fold_bn
from gzsq.sources import Calibration
from gzsq.targets import weight_targets


def _objective(net):
    t = weight_targets(net, rule="moments", relu_aware=True)
    return Objective({k: (v.mean, v.std) for k, v in t.layers.items()})


def test_same_seed_same_images_and_loss_goes_down(tiny):
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=30, lr=0.1, batch_size=8, loss="kl")
    a, log = distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=3)
    b, _ = distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=3)
    c, _ = distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert log["loss_curve"][-1] < log["loss_curve"][0]


def test_early_stop_and_expansion(tiny):
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=400, lr=1e-4, batch_size=4, loss="z", early_stop_patience=5, distill_images=4)
    images, log = distill_images(net, _objective(net), 10, (3, 8, 8), cfg, seed=0)
    assert images.shape == (10, 3, 8, 8)
    assert log["stopped_early"] and log["iterations"][0] < 400


def test_nan_loss_raises(tiny):
    net = fold_bn(tiny)
    obj = Objective({"conv1": (torch.full((8,), float("nan")), torch.ones(8))})
    with pytest.raises(DistillationDivergedError):
        distill_images(net, obj, 4, (3, 8, 8), DistillConfig(iterations=3, batch_size=4), seed=0)


def test_bad_config_refused():
    with pytest.raises(ConfigError):
        DistillConfig(loss="cosine")


def test_save_load_roundtrip_and_preview(tmp_path, tiny):
    images = torch.randn(5, 3, 8, 8)
    calib = Calibration(images, "gzsq", 7, 1.5, {"loss_curve": [1.0, 0.5]})
    path = tmp_path / "set.npz"
    save_calibration(path, calib, {"model": "tiny"})
    back = load_calibration(path)
    assert torch.equal(back.images, images) and back.seed == 7 and back.log["meta"]["model"] == "tiny"
    save_preview(tmp_path / "grid.png", images, tiny.input_spec)
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
