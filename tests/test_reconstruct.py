"""gzsq.reconstruct: learned rounding and step sizes give a SimModel on the same integer grid, better than RTN."""

from __future__ import annotations

import sys

import pytest
import torch

from gzsq import reconstruct as R
from gzsq.config import QuantConfig
from gzsq.errors import ConfigError, UnsupportedModelError
from gzsq.evaluation import load_eval_set, predict, top1
from gzsq.fold import fold_bn
from gzsq.models import load_model
from gzsq.quantization.sim import SimModel, quantize
from gzsq.reconstruct import ReconstructConfig, reconstruct

from .conftest import CIFAR_TEST, RESNET20, make_tiny, needs

FAST = ReconstructConfig(iters=40, batch_size=16)


def _tiny_sim(w_bits=4, a_bits=4, seed=0, **kw):
    model = make_tiny(seed=seed)
    calib = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return model, calib, quantize(model, calib, QuantConfig(w_bits=w_bits, a_bits=a_bits, **kw))


def _state(sim: SimModel) -> dict:
    return {k: v.clone() for k, v in sim.state_dict().items()} | {"enc": sim.encodings()}


def _same(a: dict, b: dict) -> bool:
    return a["enc"] == b["enc"] and all(torch.equal(a[k], b[k]) for k in a if k != "enc")


@pytest.mark.parametrize("kw, word", [
    (dict(method="brecq"), "method"), (dict(iters=0), "iters"), (dict(batch_size=True), "batch_size"),
    (dict(iters=2.5), "iters"), (dict(lr=0), "lr"), (dict(lr=float("nan")), "lr"), (dict(act_lr=-1e-3), "act_lr"),
    (dict(drop_prob=1.5), "drop_prob"), (dict(reg_weight=-1), "reg_weight"), (dict(warmup=1.0), "warmup"),
    (dict(loss="l1"), "loss"), (dict(channel_floor=0), "channel_floor"),
    (dict(act_scale_floor=-0.5), "act_scale_floor"), (dict(act_scale_floor=float("inf")), "act_scale_floor"),
])
def test_config_rejects_bad_values_in_one_line(kw, word):
    with pytest.raises(ConfigError) as err:
        ReconstructConfig(**kw)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_config_defaults_valid_and_frozen():
    config = ReconstructConfig()
    assert config.method == "block" and config.drop_prob == 0.5
    with pytest.raises(AttributeError):
        config.iters = 3  # type: ignore[misc]
    assert ReconstructConfig(**config.to_dict()) == config


@pytest.mark.parametrize("method", ["block", "adaround"])
def test_result_is_a_plain_sim_model_on_the_integer_grid(method):
    model, calib, sim = _tiny_sim()
    before = _state(sim)
    out = reconstruct(model, sim, calib, ReconstructConfig(method=method, iters=40, batch_size=16))
    assert _same(before, _state(sim)), "the input SimModel must not change"
    assert isinstance(out, SimModel) and out is not sim
    # no soft rounding or wrapper left: the same graph, the same module types
    assert str(out.net.graph) == str(sim.net.graph)
    kinds = lambda s: [(n, type(m).__name__) for n, m in s.net.named_modules() if n]  # noqa: E731
    assert kinds(out) == kinds(sim)
    enc = out.encodings()
    assert enc["weights"].keys() == sim.encodings()["weights"].keys()
    changed = 0
    for name, (bits, scale) in out.weight_scales.items():
        assert torch.equal(scale, sim.weight_scales[name][1]), "the round-to-nearest weight scale is kept"
        w = out.net.get_submodule(name).weight
        s = scale.reshape(-1, *([1] * (w.dim() - 1)))
        q = torch.round(w / s)
        qmax = 2 ** (bits - 1) - 1
        assert torch.equal(q * s, w) and q.abs().max() <= qmax, "weights are integers times the scale"
        w_float = fold_bn(model).get_submodule(name).weight
        assert ((q - w_float / s).abs() < 1 + 1e-5).all(), "every weight is rounded up or down, nothing else"
        changed += int((q != torch.round(w_float / s)).sum())
    assert changed > 0, "some rounding decisions differ from round-to-nearest"
    for name, q in out.act_quantizers().items():
        e = enc["activations"][name]
        assert e["scale"] == q.scale > 0 and 0 <= e["zero_point"] <= 2 ** q.bits - 1
        if q.role == "input":
            continue  # kept as calibrated (the pixel range), checked below
        assert e["min"] == pytest.approx(-e["zero_point"] * e["scale"])
        assert e["max"] == pytest.approx((2 ** q.bits - 1 - e["zero_point"]) * e["scale"])
        assert e["zero_point"] == sim.encodings()["activations"][name]["zero_point"]
    assert enc["activations"]["act_quant_0"] == sim.encodings()["activations"]["act_quant_0"], "pixel grid kept"
    x = torch.randn(8, 3, 8, 8)
    assert torch.isfinite(out(x)).all()


@pytest.mark.parametrize("method", ["block", "adaround"])
def test_reconstruction_lowers_the_error_against_the_float_model(method):
    model, calib, sim = _tiny_sim(w_bits=3, a_bits=4)
    config = ReconstructConfig(method=method, iters=150, batch_size=32)
    out = reconstruct(model, sim, calib, config)
    x = torch.randn(256, 3, 8, 8, generator=torch.Generator().manual_seed(99))  # images it did not see
    with torch.no_grad():
        ref = fold_bn(model)(x)
        err_out, err_rtn = (float((m(x) - ref).pow(2).mean()) for m in (out, sim))
    assert err_out < 0.85 * err_rtn, (err_out, err_rtn)


def test_channel_normalized_loss_weighs_each_channel_by_its_inverse_spread():
    """A channel the calibration outputs barely move counts as much as a wide one; the weights keep the
    variances' total, so the error and the rounding regulariser stay in balance; plain MSE has no weights."""
    target = torch.randn(256, 2, 4, 4) * torch.tensor([10.0, 2.0]).reshape(1, 2, 1, 1)
    w = R._channel_weights(target, "channel-normalized")
    var = target.var(dim=(0, 2, 3), unbiased=False)
    assert float((w * var).sum()) == pytest.approx(float(var.sum()), rel=1e-4)

    def error_of_one_std(channel, weights=None):
        err = torch.zeros_like(target)
        err[:, channel] = var[channel].sqrt()
        return float(R._reconstruction_error(target + err, target, weights))

    assert error_of_one_std(0) / error_of_one_std(1) == pytest.approx(25.0, rel=0.1)  # plain: the wide one rules
    assert error_of_one_std(0, w) / error_of_one_std(1, w) == pytest.approx(1.0, abs=0.25)
    assert R._channel_weights(target, "mse") is None
    model, calib, sim = _tiny_sim(w_bits=3, a_bits=4)
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=150, batch_size=32, loss="channel-normalized"))
    x = torch.randn(256, 3, 8, 8, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref = fold_bn(model)(x)
        err_out, err_rtn = (float((m(x) - ref).pow(2).mean()) for m in (out, sim))
    assert err_out < 0.85 * err_rtn, (err_out, err_rtn)


def test_a_large_channel_floor_tends_to_plain_mse():
    """The floor is added to every channel's variance: at 100 × the mean variance the weights are nearly equal."""
    target = torch.randn(256, 2, 4, 4) * torch.tensor([10.0, 2.0]).reshape(1, 2, 1, 1)
    w = R._channel_weights(target, "channel-normalized", floor=100.0)
    assert float(w[0] / w[1]) == pytest.approx(1.0, abs=0.05)
    sharp = R._channel_weights(target, "channel-normalized", floor=0.01)
    assert float(sharp[1] / sharp[0]) > 20


class _ResidualNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.a = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        return self.head(x.mean((2, 3)))


def test_residual_normalized_loss_normalizes_the_residual_blocks_alone():
    """Units that hold a residual add count as residual blocks; the stem and the classifier do not."""
    import torch.fx as fx
    gm = fx.symbolic_trace(_ResidualNet())
    modules = dict(gm.named_modules())
    units = R._block_units(gm.graph, lambda n: n.op == "call_module"
                           and isinstance(modules.get(n.target), (torch.nn.Conv2d, torch.nn.Linear)), modules)
    assert [R._has_residual_add(u) for u in units] == [False, True, False]
    # The loss reaches what is learned: step sizes and rounding other than plain MSE's, outputs finite. (On this
    # untrained toy net learned rounding beats round to nearest on some seeds and thread counts and not on others,
    # so its end-to-end error is no test of a loss.)
    model = _ResidualNet().eval()
    calib = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    sim = quantize(model, calib, QuantConfig.starting_point(3, 4))
    out, plain = (reconstruct(model, sim, calib, ReconstructConfig(iters=60, batch_size=32, loss=name))
                  for name in ("residual-normalized", "mse"))
    with torch.no_grad():
        assert torch.isfinite(out(calib)).all()
    assert out.encodings() != plain.encodings()


def test_deterministic_for_a_seed():
    model, calib, sim = _tiny_sim()
    a = reconstruct(model, sim, calib, FAST, seed=3)
    b = reconstruct(model, sim, calib, FAST, seed=3)
    c = reconstruct(model, sim, calib, FAST, seed=4)
    assert _same(_state(a), _state(b))
    assert not _same(_state(a), _state(c))


def test_masks_off_the_cpu_come_from_one_cpu_drawn_seed_per_unit(monkeypatch):
    """On a GPU the QDrop masks are drawn there (copying CPU-drawn ones took most of each step); the
    seed of each unit's masks comes from the run's CPU generator, so a seed still fixes the run and a
    resumed one. Here a CPU generator stands in for the device's; the CPU path draws as before."""
    gpu = torch.device("cuda", 0)
    cpu_generator = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: cpu_generator())
    fp = torch.zeros(4, 3, 5, 5)

    def masks(device, seed):
        state = R._State(torch.Generator().manual_seed(seed), 0.5)
        state.reseed_masks(device)
        first = state.keep_mask(fp)
        state.reseed_masks(device)  # the next unit
        return first, state.keep_mask(fp), state.generator.get_state()

    cpu_first, _, cpu_rng = masks(torch.device("cpu"), 0)
    a1, a2, a_rng = masks(gpu, 0)
    b1, b2, b_rng = masks(gpu, 0)
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and torch.equal(a_rng, b_rng)
    assert not torch.equal(a1, a2) and not torch.equal(a1, masks(gpu, 1)[0])
    assert torch.equal(cpu_first, torch.rand(fp.shape, generator=cpu_generator().manual_seed(0)) < 0.5)
    assert not torch.equal(a_rng, cpu_rng)  # off the CPU, the run's generator gave the seeds


def test_learned_weights_are_integers_on_the_kept_scales_that_the_encodings_hold():
    """Only the rounding is learned: every weight is a new integer times the round-to-nearest scale."""
    model, calib, sim = _tiny_sim()
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=40, batch_size=16), seed=3)
    changed = 0
    for name, (bits, scale) in out.weight_scales.items():
        assert torch.equal(scale, sim.weight_scales[name][1])
        w = out.net.get_submodule(name).weight
        s = scale.reshape(-1, *([1] * (w.dim() - 1)))
        q = torch.round(w / s)
        assert torch.allclose(q * s, w, rtol=0, atol=1e-6 * float(s.max())) and q.abs().max() <= 2 ** (bits - 1) - 1
        assert out.encodings()["weights"][name]["scale"] == scale.tolist()
        changed += int((q != torch.round(sim.net.get_submodule(name).weight / s)).sum())
    assert changed > 0, "some integers moved from round to nearest"


def test_act_lr_zero_keeps_the_calibrated_ranges():
    model, calib, sim = _tiny_sim()
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=20, act_lr=0.0))
    assert out.encodings()["activations"] == sim.encodings()["activations"]


def test_act_scale_floor_keeps_learned_step_sizes_at_or_above_a_share_of_the_calibrated_ones():
    """Unbounded, some step sizes shrink below their calibrated start on these images; with the floor at 1 none
    does, at 0.9 none falls below 0.9 of its start. Started from ranges calibrated on narrower images, the floored
    step sizes still grow."""
    model, calib, sim = _tiny_sim()
    narrow = quantize(model, 0.3 * calib, QuantConfig(w_bits=4, a_bits=4))

    def ratios(start_sim, floor):
        start = {k: v["scale"] for k, v in start_sim.encodings()["activations"].items()}
        out = reconstruct(model, start_sim, calib, ReconstructConfig(iters=20, batch_size=16, act_scale_floor=floor),
                          seed=0)
        return [v["scale"] / start[k] for k, v in out.encodings()["activations"].items()]

    free, floored, partial = ratios(sim, 0.0), ratios(sim, 1.0), ratios(sim, 0.9)
    assert min(free) < 0.99, free
    assert min(floored) >= 1 - 1e-6, floored
    assert min(partial) >= 0.9 - 1e-6 and min(partial) < 0.99, partial
    grown = ratios(narrow, 1.0)
    assert min(grown) >= 1 - 1e-6 and max(grown) > 1.05, grown


def test_units_one_per_block_or_layer_and_interrupt_checked_each_step(monkeypatch):
    model, calib, sim = _tiny_sim(first_last_8bit=True)
    calls = []
    monkeypatch.setattr(R.interrupt, "check", lambda stage="": calls.append(stage))
    out = reconstruct(model, sim, calib, ReconstructConfig(iters=7))
    units = out.reconstruction["units"]
    # tiny: conv1+ReLU, the residual block (conv2, add, ReLU, pooled output), the classifier
    assert [u["layers"] for u in units] == [["conv1"], ["conv2"], ["fc"]]
    assert calls == ["reconstruct"] * 7 * 3
    calls.clear()
    out = reconstruct(model, sim, calib, ReconstructConfig(method="adaround", iters=5))
    assert len(out.reconstruction["units"]) == 3 and calls == ["reconstruct"] * 15
    for name, q in out.act_quantizers().items():  # the 8-bit edges are learned on their own grid
        assert q.bits == sim.act_quantizers()[name].bits


def test_interrupt_stops_it(monkeypatch):
    model, calib, sim = _tiny_sim()

    def stop(stage=""):
        raise R.interrupt.Interrupted()

    monkeypatch.setattr(R.interrupt, "check", stop)
    with pytest.raises(R.interrupt.Interrupted):
        reconstruct(model, sim, calib, FAST)


def test_progress_bar_per_unit_with_loss(capsys):
    model, calib, sim = _tiny_sim()
    reconstruct(model, sim, calib, ReconstructConfig(iters=12), progress=True)
    err = capsys.readouterr().err
    assert "reconstruct 1/3 conv1" in err and "reconstruct 3/3 fc" in err and "loss=" in err
    reconstruct(model, sim, calib, ReconstructConfig(iters=12))
    assert "reconstruct" not in capsys.readouterr().err


def test_bad_inputs_are_one_line_errors():
    model, calib, sim = _tiny_sim()
    with pytest.raises(UnsupportedModelError):
        reconstruct(model, sim, calib * float("nan"), FAST)
    with pytest.raises(UnsupportedModelError):
        reconstruct(model, sim, calib[0], FAST)
    with pytest.raises(UnsupportedModelError):
        reconstruct(model, fold_bn(model), calib, FAST)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten(), torch.nn.Linear(256, 5))
    with pytest.raises(UnsupportedModelError, match="not made from this model|differs"):
        reconstruct(other, sim, calib, FAST)


# ResNet-20 W4A4 (MSE-clipped starting ranges) on CIFAR-10: 64 test images as calibration, 1000 others
# (every 10th) to score.
# Measured with `python -m tests.test_reconstruct` (seeds 0, 1, 2; one thread):
#   round-to-nearest 69.2, reconstruction (block, 40 steps per block, the default residual-normalized loss)
#   75.1 / 75.5 / 74.5: +5.3 to +6.3 pt, seed spread 1.0 pt (1 min 33 s for all three beside one other job;
#   at 60 steps, the file's earlier version: 75.3 / 74.8 / 76.3).
# The test asks for at least MARGIN = 4.0 points over round-to-nearest at seed 0: inside the measured gain,
# above the seed spread.
R20_QUANT = QuantConfig(w_bits=4, a_bits=4, observer="mse", weight_clip="mse")  # the ranges it starts from
R20_CONFIG = ReconstructConfig(iters=40, batch_size=32)
MARGIN = 4.0


def _r20_case():
    model = load_model("cifar10-resnet20", needs(RESNET20))
    data = load_eval_set(model, needs(CIFAR_TEST))
    rows = torch.arange(0, len(data.labels), 10)
    calib = data.images[5::10][:64]
    return model, calib, data.images[rows], data.labels[rows.numpy()]


def _r20_scores(seeds):
    model, calib, images, labels = _r20_case()
    sim = quantize(model, calib, R20_QUANT)
    rtn = top1(predict(sim, images), labels)
    return rtn, [top1(predict(reconstruct(model, sim, calib, R20_CONFIG, seed=s), images), labels) for s in seeds]


@pytest.mark.timeout(240)
def test_resnet20_w4a4_beats_round_to_nearest():
    rtn, (rec,) = _r20_scores([0])
    assert rec >= rtn + MARGIN, (rtn, rec)


if __name__ == "__main__":  # the measurement quoted above
    torch.set_num_threads(1)
    rtn, recs = _r20_scores([0, 1, 2])
    print(f"round-to-nearest {rtn:.1f}, reconstruction {', '.join(f'{r:.1f}' for r in recs)}", file=sys.stderr)
