"""The zoo: names, checkpoints, preprocessing, and one-line errors."""


import pytest
import torch

from gzsq.errors import ModelLoadError
from gzsq.models import available_models, load_model

from .conftest import RESNET20, needs


@pytest.mark.parametrize("name,n_convs", [("cifar10-resnet20-nf", 19), ("cifar10-resnet32-nf", 31)])
def test_bnfree_resnets_ship_and_have_no_batchnorm(name, n_convs):
    model = load_model(name)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == n_convs
    assert name in available_models()


@pytest.mark.parametrize("name,weights,match", [
    ("cifar10-resnet21", RESNET20, "6n\\+2"),
    ("cifar10-resnet32", RESNET20, "does not match"),
    ("cifar10-resnet20", None, "needs --weights"),
    ("cifar10-resnet20", "/nonexistent.th", "does not exist"),
    ("vgg16", None, "unknown model"),
    ("cifar10-resnet44-nf", None, "unknown model"),  # only the trained BN-free depths ship
])
def test_load_errors_are_one_line(name, weights, match):
    with pytest.raises(ModelLoadError, match=match) as err:
        load_model(name, weights)
    assert "\n" not in str(err.value)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_model("cifar10-resnet20", bad)


def test_nan_weights_refused(tmp_path):
    state = torch.load(needs(RESNET20), map_location="cpu", weights_only=True)["state_dict"]
    state["module.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.th"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelLoadError, match="NaN"):
        load_model("cifar10-resnet20", path)
