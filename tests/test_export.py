"""FP32 ONNX export, ONNX Runtime int8 quantization, and agreement of the simulator with the runtime."""

import numpy as np
import pytest
import onnx
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gzsq.config import QuantConfig
from gzsq.evaluation import load_eval_set, predict
from gzsq.errors import ConfigError
from gzsq.export import Int8ExportConfig, OnnxClassifier, activation_ranges, export_fp32_onnx, export_onnx_int8
from gzsq.fold import fold_bn
from gzsq.models import load_model
from gzsq.quantization.sim import quantize
from gzsq.sources import SourceOptions, make_calibration

from .conftest import CIFAR_TEST, CIFAR_TRAIN, IMAGENET, RESNET20, make_tiny, needs


def _calib(n=32, seed=0):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_fp32_export_matches_torch(tmp_path):
    net = make_tiny()
    path = export_fp32_onnx(net, tmp_path / "fp32.onnx")
    x = _calib(7)
    got = OnnxClassifier(path).logits(x.numpy())
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "gzsq.input" in meta and '"layout": "nchw"' in meta["gzsq.input"]
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind


def test_threads_reach_every_session_the_int8_export_opens(tmp_path, monkeypatch):
    """`--threads` must hold inside ONNX Runtime's own calibrator and the bias correction too, which build their
    sessions from a plain SessionOptions(); the patch is undone afterwards, and the file is the same."""
    import onnxruntime as ort

    net = make_tiny()
    fp32 = export_fp32_onnx(net, tmp_path / "fp32.onnx")
    plain = export_onnx_int8(fp32, tmp_path / "plain.onnx", _calib().numpy())
    seen, original = [], ort.InferenceSession

    def spy(path, sess_options=None, *args, **kwargs):
        seen.append(sess_options.intra_op_num_threads if sess_options is not None else None)
        return original(path, sess_options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    threaded = export_onnx_int8(fp32, tmp_path / "threads1.onnx", _calib().numpy(), threads=1)
    assert len(seen) >= 3 and set(seen) == {1}, seen  # pre-processing, calibration (twice), bias correction
    assert ort.SessionOptions().intra_op_num_threads == 0  # ONNX Runtime's default again
    assert threaded.read_bytes() == plain.read_bytes()


def test_int8_model_is_qdq_and_uses_the_injected_input_range(tmp_path):
    net = make_tiny()
    fp32 = export_fp32_onnx(net, tmp_path / "fp32.onnx")
    low, high = net.input_spec.pixel_bounds()
    out = export_onnx_int8(fp32, tmp_path / "int8.onnx", _calib().numpy(), input_range=(float(low.min()),
                                                                                       float(high.max())))
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    weights = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert weights, "conv weights are stored as int8"
    lo, hi = activation_ranges(out)["input"]
    # ONNX Runtime nudges the range so zero is exact: within one quantization step of the pixel range
    step = (float(high.max()) - float(low.min())) / 255
    assert abs(lo - float(low.min())) <= step and abs(hi - float(high.max())) <= step
    logits = OnnxClassifier(out).logits(_calib(5, seed=1).numpy())
    assert logits.shape == (5, 5) and np.isfinite(logits).all()


def test_int8_export_is_deterministic(tmp_path):
    net = make_tiny()
    fp32 = export_fp32_onnx(net, tmp_path / "fp32.onnx")
    a = export_onnx_int8(fp32, tmp_path / "a.onnx", _calib().numpy())
    b = export_onnx_int8(fp32, tmp_path / "b.onnx", _calib().numpy())
    assert a.read_bytes() == b.read_bytes()


def test_fixed_batch_model_is_calibrated_and_run_in_its_batch_size(tmp_path):
    net = fold_bn(make_tiny()).eval()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(net, (torch.zeros(4, 3, 8, 8),), str(path), dynamo=False, input_names=["input"])
    out = export_onnx_int8(path, tmp_path / "int8.onnx", _calib(10).numpy())  # 10 is not a multiple of 4
    runner = OnnxClassifier(out)
    assert runner.fixed_batch == 4
    assert runner.predict(_calib(9).numpy()).shape == (9,)


def test_simulated_w8a8_agrees_with_onnxruntime_int8(tmp_path):
    """The simulator and the real int8 model agree on top-1 to within 0.3 pt (1000 CIFAR-10 test
    images, every 10th so all classes appear, same calibration set). The simulator runs with
    placement="runtime", which quantizes what ONNX Runtime's QDQ graph quantizes, and the export uses
    the full 8-bit weight grid with s8 activations (whose kernels compute exactly ONNX Runtime's QDQ
    reference on ResNet-20 on this VNNI-less CPU), so both hold the same W8A8 numbers."""
    model = load_model("cifar10-resnet20", needs(RESNET20))
    calib = make_calibration("real", model, 256, seed=0,
                             options=SourceOptions(setting="bn", calib_data=str(needs(CIFAR_TRAIN)))).images
    fp32 = export_fp32_onnx(model, tmp_path / "r20.onnx")
    int8 = export_onnx_int8(fp32, tmp_path / "r20-int8.onnx", calib.numpy(),
                            Int8ExportConfig(reduce_range=False, activations="int8", bias_correction=False),
                            input_range=model.input_spec.input_range())
    data = load_eval_set(model, needs(CIFAR_TEST))
    images, labels = data.images[::10], data.labels[::10]
    ort_pred = OnnxClassifier(int8).predict(images.numpy(), batch_size=250)
    sim_pred = predict(quantize(model, calib, QuantConfig(placement="runtime")), images)
    ort_top1, sim_top1 = (ort_pred == labels).mean() * 100, (sim_pred == labels).mean() * 100
    assert abs(ort_top1 - sim_top1) <= 0.3, (ort_top1, sim_top1)
    assert (ort_pred == sim_pred).mean() >= 0.98


def test_default_int8_kernels_match_the_qdq_reference_on_lite0(tmp_path):
    """Without VNNI, full-range int8 weights saturate 16-bit sums inside ONNX Runtime's fused kernels
    (Lite0's folded depthwise weights are large). The default (pair-safe) weight grids must make the fused
    model compute what its own QDQ graph says (top-1 equal on ≥ 98 % of images)."""
    model = load_model("efficientnet-lite0")
    data = load_eval_set(model, needs(IMAGENET))
    images = data.images[:100].numpy()
    calib = make_calibration("gaussian", model, 8, seed=0, options=SourceOptions()).images
    fp32 = export_fp32_onnx(model, tmp_path / "lite0.onnx")
    int8 = export_onnx_int8(fp32, tmp_path / "lite0-int8.onnx", calib.numpy())
    fused = OnnxClassifier(int8).predict(images)
    ref = OnnxClassifier(int8, reference=True).logits(images, batch_size=25)  # Q/DQ run as float ops
    assert (fused == ref.argmax(1)).mean() >= 0.98


def _two_conv_graph(seed=0):
    """input → 1×1 conv (3→6, no bias) → depthwise 1×1 conv (6 groups) → output: linear, no padding, so
    bias correction must restore every channel's mean exactly."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(6, 3, 1, 1)).astype(np.float32)
    w2 = rng.normal(size=(6, 1, 1, 1)).astype(np.float32)
    b2 = rng.normal(size=6).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w1"], ["h"], name="pointwise"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["logits"], name="depthwise", group=6)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 6, 4, 4])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(b2, "b2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_bias_correction_restores_each_channels_mean_exactly(tmp_path):
    from onnx import numpy_helper

    from gzsq.export.bias_correction import channel_means, correct_conv_biases, dequantized_conv_weights

    fp32 = _two_conv_graph()
    onnx.save(fp32, tmp_path / "fp32.onnx")
    images = (np.random.default_rng(1).normal(size=(16, 3, 4, 4)) + 0.7).astype(np.float32)  # E[x] ≠ 0
    int8 = onnx.load(export_onnx_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", images,
                                     Int8ExportConfig(bias_correction=False)))
    corrected, n = correct_conv_biases(fp32, int8, [{"input": images}])
    assert n == 2
    # the corrected float model with the int8 model's rounded weights has the original channel means
    rounded = dequantized_conv_weights(int8)
    by_name = {node.name: node for node in corrected.graph.node}
    for init in corrected.graph.initializer:
        for node_name, w in rounded.items():
            if by_name[node_name].input[1] == init.name:
                init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    original = channel_means(fp32, [{"input": images}], ["h", "logits"])
    restored = channel_means(corrected, [{"input": images}], ["h", "logits"])
    for t in ("h", "logits"):
        np.testing.assert_allclose(restored[t], original[t], atol=1e-5)
    uncorrected = channel_means(fp32, [{"input": images}], ["logits"])  # sanity: rounding did shift the means
    assert not np.allclose(uncorrected["logits"], channel_means(int8, [{"input": images}], ["logits"])["logits"],
                           atol=1e-4)


def test_bias_corrected_export_is_closer_to_fp32(tmp_path):
    fp32 = _two_conv_graph(seed=2)
    onnx.save(fp32, tmp_path / "fp32.onnx")
    images = (np.random.default_rng(3).normal(size=(32, 3, 4, 4)) + 0.7).astype(np.float32)
    reference = OnnxClassifier(tmp_path / "fp32.onnx").logits(images)
    errors = {}
    for corrected in (False, True):
        out = export_onnx_int8(tmp_path / "fp32.onnx", tmp_path / f"int8-{corrected}.onnx", images,
                               Int8ExportConfig(bias_correction=corrected))
        diff = OnnxClassifier(out).logits(images) - reference
        errors[corrected] = np.abs(diff.mean(axis=(0, 2, 3))).max()
    assert errors[True] < errors[False]


def _conv_model(w: np.ndarray, group: int = 1) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    c_in = w.shape[1] * group
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["y"], name="conv", group=group)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", c_in, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])



@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.sampled_from([1, 3]), st.integers(0, 2**31 - 1),
       st.floats(0.01, 100.0))
def test_pair_safe_grid_cannot_saturate_and_is_finer_than_reduce_range(c_out, c_in, k, seed, spread):
    """On the pair-safe grid (scale r/127, symmetric rounding as ONNX Runtime does it) no two neighbouring
    same-sign weights, in either im2col order, sum past 128 in magnitude: 255·128 fits 16 bits. And the
    grid is never coarser than reduce_range's (scale max|w|/64)."""
    from gzsq.export.onnx_int8 import pair_safe_weight_ranges

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c_out, c_in, k, k)) * spread * rng.uniform(0.1, 1, size=(c_out, 1, 1, 1))
    r = pair_safe_weight_ranges(_conv_model(w))["w"]
    scale = r / 127
    q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127)
    for order in (q.reshape(c_out, -1), q.transpose(0, 2, 3, 1).reshape(c_out, -1)):
        if order.shape[1] % 2:
            order = np.concatenate([order, np.zeros((c_out, 1))], axis=1)
        a, b = order[:, 0::2], order[:, 1::2]
        worst = np.where(np.sign(a) * np.sign(b) > 0, np.abs(a) + np.abs(b), np.maximum(np.abs(a), np.abs(b)))
        assert worst.max() <= 128 and 255 * worst.max() <= 32767
    assert np.all(scale <= np.abs(w).reshape(c_out, -1).max(1) / 63.5 + 1e-12)


def test_depthwise_convs_are_left_to_the_full_grid():
    from gzsq.export.onnx_int8 import depthwise_weights, pair_safe_weight_ranges

    model = _conv_model(np.ones((4, 1, 3, 3)), group=4)
    assert depthwise_weights(model) == ["w"] and pair_safe_weight_ranges(model) == {}


@pytest.mark.parametrize("bad", [dict(calibration="entropy"), dict(activations="int4"), dict(weights="fp8")])
def test_unknown_export_choices_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match="choose one of"):
        Int8ExportConfig(**bad)


def _relu6_net():
    from gzsq.models import InputSpec

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU6(), torch.nn.Conv2d(4, 4, 1),
                              torch.nn.ReLU6(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
    net.eval()
    net.input_spec = InputSpec(size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    net.gzsq_name = "relu6-tiny"
    return net


def test_clip_ranges_give_relu6_outputs_their_bounds(tmp_path):
    """With `clip_ranges` every ReLU6 output is quantized over [0, 6] however far the calibration images
    reach; without it, over the calibrated min/max (here well short of 6)."""
    from gzsq.export.onnx_int8 import clip_bounds

    fp32 = export_fp32_onnx(_relu6_net(), tmp_path / "fp32.onnx")
    bounds = clip_bounds(onnx.load(str(fp32)))
    assert len(bounds) == 2 and set(bounds.values()) == {(0.0, 6.0)}
    quiet = (_calib() * 0.05).numpy()  # small activations: no ReLU6 output comes near 6
    highs = {}
    for clip in (False, True):
        out = export_onnx_int8(fp32, tmp_path / f"int8-{clip}.onnx", quiet, Int8ExportConfig(clip_ranges=clip))
        highs[clip] = sorted(hi for lo, hi in activation_ranges(out).values() if lo == 0.0)
    assert max(highs[False]) < 3.0
    assert sum(abs(h - 6.0) < 1e-5 for h in highs[True]) == 2  # the two ReLU6 outputs (float32 scale · 255)


def test_range_margin_widens_calibrated_ranges_within_clip_bounds(tmp_path):
    """`range_margin` scales each calibrated range away from zero (a ReLU6 output's upper end stops at 6)
    and leaves the network input's known range alone."""
    fp32 = export_fp32_onnx(_relu6_net(), tmp_path / "fp32.onnx")
    images = _calib().numpy()
    ranges = {}
    for margin in (1.0, 1.5, 100.0):
        out = export_onnx_int8(fp32, tmp_path / f"int8-{margin}.onnx", images, Int8ExportConfig(range_margin=margin))
        ranges[margin] = activation_ranges(out)
    assert ranges[1.0].keys() == ranges[1.5].keys()
    widened = 0
    for name, (lo, hi) in ranges[1.0].items():
        lo15, hi15 = ranges[1.5][name]
        if name == "input":
            assert (lo15, hi15) == pytest.approx((lo, hi), abs=1e-6)
            continue
        # uint8 ranges always hold zero; a side that was short of its bound grows by the margin (one step's slack)
        assert hi15 >= hi - 1e-6 and lo15 <= lo + 1e-6
        if hi < 3.0:
            widened += 1
            assert hi15 == pytest.approx(1.5 * hi, rel=0.02)
    assert widened >= 2
    from gzsq.export.onnx_int8 import clip_bounds

    clipped = clip_bounds(onnx.load(str(fp32)))
    assert len(clipped) == 2
    for name in clipped:  # the two ReLU6 outputs: a 100× margin stops at their bounds
        assert ranges[100.0][name] == pytest.approx((0.0, 6.0), abs=1e-4)


def test_range_margin_below_one_is_refused():
    with pytest.raises(ConfigError, match="range_margin"):
        Int8ExportConfig(range_margin=0.5)
