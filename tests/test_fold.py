"""BN folding: no BatchNorm left, outputs equal to the original."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gzsq.data import load_dataset
from gzsq.fold import fold_bn, has_batchnorm
from gzsq.models import load_model

from .conftest import CIFAR_TEST, IMAGENET, RESNET20, make_tiny, needs


def _rel_err(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000))
def test_fold_tiny_random_bn_statistics(seed):
    net = make_tiny(seed=seed)
    folded = fold_bn(net)
    assert not has_batchnorm(folded)
    assert has_batchnorm(net)  # the caller's model is untouched
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert _rel_err(net(x), folded(x)) < 1e-5


def test_fold_is_idempotent_on_a_bn_free_net():
    net = make_tiny(norm=False)
    folded = fold_bn(net)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), folded(x))


def _check_zoo_model(model, real):
    folded = fold_bn(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    rand = torch.randn((2,) + model.input_spec.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for x in (rand, real):
            assert _rel_err(model(x), folded(x)) < 1e-5


@pytest.mark.parametrize("name", ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet20-nf"])
def test_fold_cifar_zoo_models_random_and_real(name):
    weights = needs(RESNET20.parent / f"resnet{name.removeprefix('cifar10-resnet')}.th") if name != "cifar10-resnet20-nf" else None
    model = load_model(name, weights)
    data = load_dataset(needs(CIFAR_TEST))
    real = model.input_spec.to_tensor(data.images(range(16)))
    _check_zoo_model(model, real)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_fold_efficientnet_lite_random_and_real(name):
    model = load_model(name)
    data = load_dataset(needs(IMAGENET))
    real = model.input_spec.to_tensor(data.images([0, 101, 377]))
    _check_zoo_model(model, real)
