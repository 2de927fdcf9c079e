"""`cifar10-vgg7-nf`: a plain VGG-style CIFAR-10 net trained without normalization, shipped by name.

Its FP32 count on the first 1000 test images comes from `python experiments/vgg_fp32_top1.py
--threads 1` (results/vgg_fp32_top1.txt); the training run is results/vgg_training.json. Those 1000 images are all
airplanes (test.npz is stored class by class): the count pins the shipped weights, it is not the model's accuracy
(84.47 % on all 10 000, the same file).
"""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from gzsq.cli import main
from gzsq.config import default_setting
from gzsq.data import load_dataset
from gzsq.fold import fold_bn
from gzsq.metrics import predict
from gzsq.models import available_models, load_model
from gzsq.models.vgg_cifar import CifarVGG
from gzsq.models.zoo import CIFAR_SPEC, VGG_NF_CHECKPOINT
from gzsq.quantization.sim import quantize, weight_layer_nodes
from gzsq.targets import weight_targets

from .cli_tools import run_cli
from .conftest import CIFAR_TEST, ROOT, needs

NAME = "cifar10-vgg7-nf"
FP32_RECORD = ROOT / "results/vgg_fp32_top1.txt"
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@pytest.fixture(scope="module")
def model():
    return load_model(NAME)


@pytest.fixture(scope="module")
def first_1000():
    data = load_dataset(needs(CIFAR_TEST))
    return CIFAR_SPEC.to_tensor(data.images(range(1000))), np.asarray(data.labels[:1000])


@pytest.fixture(scope="module")
def small_test_set(tmp_path_factory):
    data = load_dataset(needs(CIFAR_TEST))
    rows = np.arange(0, 10000, 50)  # 200 images, all classes
    path = tmp_path_factory.mktemp("vgg") / "small.npz"
    np.savez(path, images=np.stack(data.images(rows)), labels=data.labels[rows])
    return path


def test_ships_loads_by_name_and_has_no_normalization(model):
    assert NAME in available_models() and VGG_NF_CHECKPOINT.is_file()
    assert isinstance(model, CifarVGG) and model.gzsq_name == NAME and model.input_spec == CIFAR_SPEC
    assert not any(isinstance(m, NORM_LAYERS) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert set(model.state_dict()) == set(torch.load(VGG_NF_CHECKPOINT, weights_only=True))
    assert default_setting(model) == "bn-free"


def test_fp32_top1_on_the_first_1000_test_images_is_the_recorded_count(model, first_1000):
    recorded = re.search(r"first 1000 test images: (\d+) correct", FP32_RECORD.read_text())
    assert recorded, f"{FP32_RECORD} lacks the first-1000 count"
    images, labels = first_1000
    assert int((predict(model, images) == labels).sum()) == int(recorded.group(1))


def test_folding_is_the_identity_and_every_layer_is_found(model, first_1000):
    """No BN to fold; the simulator and the statistics targets both see all 6 convs and the linear layer."""
    folded = fold_bn(model)
    x = first_1000[0][:8]
    with torch.no_grad():
        assert torch.equal(model(x), folded(x))
    layers = [n.target for n in weight_layer_nodes(folded)]
    assert layers == [f"features.{i}" for i in (0, 2, 5, 7, 10, 12)] + ["linear"]
    targets = weight_targets(model, rule="moments", relu_aware=True)
    assert list(targets.layers) == layers
    sim = quantize(model, torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert list(sim.weight_scales) == layers
    roles = [q.role for q in sim.act_quantizers().values()]
    assert roles.count("input") == 1 and roles.count("layer-input") == 6  # the 6 layers after the first conv


def test_evaluate_accepts_it_with_gzsq_calibration_bn_free_by_default(small_test_set):
    r = run_cli(["evaluate", "--model", NAME, "--data", small_test_set, "--calib", "gzsq", "--n-calib", "8",
                 "--w-bits", "8", "--a-bits", "8", "--reconstruct", "none", "--json"])
    assert r.code == 0, str(r)
    result = json.loads(r.out.strip().splitlines()[-1])
    assert result["model"] == NAME and result["setting"] == "bn-free" and result["n_calib"] == 8
    assert result["agreement"] > 90


def test_quantize_writes_an_int8_onnx_model(small_test_set, tmp_path, capsys):
    out = tmp_path / "vgg-int8.onnx"
    code = main(["quantize", NAME, "-o", str(out), "--calib", "gaussian", "--n-calib", "16",
                 "--eval-data", str(small_test_set), "--json"])
    stdout, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["setting"] == "bn-free" and report["n_calib"] == 16
    e = report["evaluation"]
    assert e["images"] == 200 and e["agreement"] > 90
    import onnxruntime as ort

    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
