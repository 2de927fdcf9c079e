"""SE + ESA targets checked against the recursion worked by hand on a two-layer net."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gzsq.errors import ConfigError
from gzsq.models.spec import InputSpec
from gzsq.targets import adjust, Stat, weight_targets


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(2, 4, 1)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


def _net():
    net = TwoLayer()
    with torch.no_grad():
        net.a.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]).view(2, 3, 1, 1))
        net.a.bias.copy_(torch.tensor([0.5, -0.5]))
        net.b.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -2.0], [1.0, 3.0]]).view(4, 2, 1, 1))
        net.b.bias.copy_(torch.tensor([0.0, 1.0, 0.0, -1.0]))
    net.input_spec = InputSpec(size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    return net


def test_paper_recursion_by_hand():
    t = weight_targets(_net(), rule="paper", esa="mean+min")
    # layer a: μ_W = (2, 0), σ_W = (√(2/3), √(2/3)); input (0, 1) truncated to 2 channels
    mu_a = torch.tensor([2.0 + 0 + 0.5, 0.0 + 0 - 0.5])
    sd_a = torch.full((2,), math.sqrt(2 / 3 + 1))
    assert torch.allclose(t.layers["a"].mean, mu_a)
    assert torch.allclose(t.layers["a"].std, sd_a)
    # layer b: 4 channels from 2 → ESA fills channels 2, 3 with mean+min of the previous vector
    fill_m = mu_a.mean() + mu_a.min()  # 0 + (-0.5)
    fill_s = sd_a.mean() + sd_a.min()
    mu_in = torch.tensor([mu_a[0], mu_a[1], fill_m, fill_m])
    sd_in = torch.tensor([sd_a[0], sd_a[1], fill_s, fill_s])
    mu_w = torch.tensor([1.0, 1.0, -1.0, 2.0])
    sd_w = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert torch.allclose(t.layers["b"].mean, mu_w + mu_in + torch.tensor([0.0, 1.0, 0.0, -1.0]))
    assert torch.allclose(t.layers["b"].std, torch.sqrt(sd_w**2 + sd_in**2))


def test_per_layer_variant_is_scalar():
    t = weight_targets(_net(), per_channel=False)
    assert all(v.mean.numel() == 1 for v in t.layers.values())
    assert torch.allclose(t.layers["a"].mean, torch.tensor([1.0 + 0 + 0.0]))  # mean W 1, mean b 0


def test_moments_rule_by_hand():
    t = weight_targets(_net(), rule="moments")
    # a: E = Σ W·0 + b; Var = Σ W² · 1
    assert torch.allclose(t.layers["a"].mean, torch.tensor([0.5, -0.5]))
    assert torch.allclose(t.layers["a"].std, torch.tensor([math.sqrt(14), math.sqrt(2)]))
    # b reads a's output unchanged (ReLU ignored): E = W @ mean_a + b
    Wb = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -2.0], [1.0, 3.0]])
    assert torch.allclose(t.layers["b"].mean, Wb @ torch.tensor([0.5, -0.5]) + torch.tensor([0.0, 1.0, 0.0, -1.0]))
    assert torch.allclose(t.layers["b"].std, torch.sqrt((Wb**2) @ torch.tensor([14.0, 2.0])))


def test_relu_aware_matches_monte_carlo():
    t = weight_targets(_net(), rule="moments", relu_aware=True)
    g = torch.Generator().manual_seed(0)
    a = t.layers["a"]
    z = torch.randn(400_000, 2, generator=g) * a.std + a.mean
    r = z.clamp_min(0)
    Wb = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -2.0], [1.0, 3.0]])
    expected = r.mean(0) @ Wb.T + torch.tensor([0.0, 1.0, 0.0, -1.0])
    assert torch.allclose(t.layers["b"].mean, expected, atol=0.02)


def test_residual_add_sums_means_and_variances(tiny):
    """TinyNet's head reads relu(conv2(h) + h), h = relu(conv1(x)); with ReLUs ignored (not relu_aware) the
    add's mean is the sum of the two means and its variance the sum of the two variances."""
    from gzsq.fold import fold_bn

    folded = fold_bn(tiny)
    t = weight_targets(folded, rule="moments")
    assert list(t.layers) == ["conv1", "conv2", "fc"]
    w, b = folded.fc.weight.detach(), folded.fc.bias.detach()
    one, two = t.layers["conv1"], t.layers["conv2"]
    assert torch.allclose(t.layers["fc"].mean, w @ (one.mean + two.mean) + b, atol=1e-6)
    assert torch.allclose(t.layers["fc"].std ** 2, (w**2) @ (one.std**2 + two.std**2), rtol=1e-5)


@pytest.mark.parametrize("rule", ["min", "mean-min", "mean+min", "mean", "max-mean", "max+mean", "max"])
def test_esa_candidates(rule):
    s = adjust(Stat(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0])), 3, rule)
    assert s.mean.shape == (3,) and torch.equal(s.mean[:2], torch.tensor([1.0, 3.0]))


def test_unknown_options_refused():
    with pytest.raises(ConfigError):
        weight_targets(_net(), rule="magic")
    with pytest.raises(ConfigError):
        adjust(Stat(torch.ones(2), torch.ones(2)), 3, "median")


class _PaddedConv(nn.Module):
    """A spatial pad then a conv, in NCHW or wrapped in NHWC permutes as ONNX imports of NHWC graphs are;
    or a channel pad (two zero channels on each side) done in NHWC."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(7 if how.endswith("channels") else 3, 4, 3)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight)

    def forward(self, x):
        if self.how == "nchw":
            x = F.pad(x, (1, 1, 1, 1))
        elif self.how == "nhwc":
            x = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1, 0, 0)).permute((0, 3, 1, 2))
        elif self.how == "nchw-channels":
            x = F.pad(x, (0, 0, 0, 0, 2, 2))
        else:
            x = F.pad(x.permute(0, 2, 3, 1), (2, 2)).permute(0, 3, 1, 2)
        return self.conv(x)


def test_a_spatial_pad_inside_nhwc_permutes_is_not_a_channel_pad():
    nchw, nhwc = _PaddedConv("nchw"), _PaddedConv("nhwc")
    nhwc.load_state_dict(nchw.state_dict())
    for rule in ("paper", "moments"):
        a, b = weight_targets(nchw, rule=rule), weight_targets(nhwc, rule=rule)
        assert torch.equal(a.layers["conv"].mean, b.layers["conv"].mean)
        assert torch.equal(a.layers["conv"].std, b.layers["conv"].std)
        assert (b.layers["conv"].std > 0).all()


def test_a_channel_pad_in_nhwc_adds_zero_channels_as_in_nchw():
    nchw, nhwc = _PaddedConv("nchw-channels"), _PaddedConv("nhwc-channels")  # 3 channels + 2 + 2 zero ones
    nhwc.load_state_dict(nchw.state_dict())
    for rule in ("paper", "moments"):
        a, b = weight_targets(nchw, rule=rule), weight_targets(nhwc, rule=rule)
        assert torch.equal(a.layers["conv"].mean, b.layers["conv"].mean)
        assert torch.equal(a.layers["conv"].std, b.layers["conv"].std)


class InvertedResidual(nn.Module):
    """MobileNetV2's block, BN already folded: 1×1 expand → ReLU6 → 3×3 depthwise → ReLU6 → 1×1 project
    (linear) → + input, then a 1×1 conv that reads the sum."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(2, 4, 1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.project = nn.Conv2d(4, 2, 1)
        self.after = nn.Conv2d(2, 3, 1)

    def forward(self, x):
        y = F.relu6(self.expand(x))
        y = F.relu6(self.dw(y))
        return self.after(x + self.project(y))


def test_inverted_residual_block_by_hand():
    torch.manual_seed(0)
    net = InvertedResidual()
    stem = nn.Conv2d(3, 2, 1)  # a first layer so the block's input has non-trivial statistics
    model = nn.Sequential(stem, net).eval()
    t = weight_targets(model, rule="moments", relu_aware=True, coherence=1.0)
    assert list(t.layers) == ["0", "1.expand", "1.dw", "1.project", "1.after"]

    def linear(layer, m, v, groups=1):
        w = layer.weight.detach()
        s = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)  # ρ = 1: Var = (ΣW)² Var
        if groups > 1:  # depthwise: output channel c reads input channel c only
            return s[:, 0] * m + layer.bias.detach(), ((s[:, 0] ** 2) * v).sqrt()
        return s @ m + layer.bias.detach(), ((s**2) @ v).sqrt()

    def relu6(m, sd):
        from gzsq.targets import _rectify

        r = _rectify(Stat(m, sd), 6.0)
        return r.mean, r.std**2

    m0, s0 = linear(stem, torch.zeros(3), torch.ones(3))
    assert torch.allclose(t.layers["0"].mean, m0) and torch.allclose(t.layers["0"].std, s0)
    m1, s1 = linear(net.expand, m0, s0**2)
    assert torch.allclose(t.layers["1.expand"].mean, m1) and torch.allclose(t.layers["1.expand"].std, s1)
    m2, s2 = linear(net.dw, *relu6(m1, s1), groups=4)
    assert torch.allclose(t.layers["1.dw"].mean, m2) and torch.allclose(t.layers["1.dw"].std, s2)
    m3, s3 = linear(net.project, *relu6(m2, s2))
    assert torch.allclose(t.layers["1.project"].mean, m3) and torch.allclose(t.layers["1.project"].std, s3)
    # the residual add: means add, variances add (the projection is linear, no rectification)
    m4, s4 = linear(net.after, m0 + m3, s0**2 + s3**2)
    assert torch.allclose(t.layers["1.after"].mean, m4) and torch.allclose(t.layers["1.after"].std, s4)


def test_depthwise_coherence_changes_only_depthwise_layers_variance_rule():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), InvertedResidual()).eval()
    base = weight_targets(model, rule="moments", relu_aware=True, coherence=1.0)
    same = weight_targets(model, rule="moments", relu_aware=True, coherence=1.0, depthwise_coherence=1.0)
    assert all(torch.equal(base.layers[k].std, same.layers[k].std) for k in base.layers)
    t = weight_targets(model, rule="moments", relu_aware=True, coherence=1.0, depthwise_coherence=0.0)
    for k in ("0", "1.expand"):  # upstream of the depthwise conv: untouched
        assert torch.equal(t.layers[k].mean, base.layers[k].mean) and torch.equal(t.layers[k].std, base.layers[k].std)
    dw = model[1].dw
    w = dw.weight.detach().reshape(4, -1)
    x = base.layers["1.expand"]
    from gzsq.targets import _rectify

    r = _rectify(x, 6.0)
    # ρ = 0 at the depthwise conv: Var = Σ_k W² · Var[x_c] (ρ = 1 would use (Σ_k W)²)
    assert torch.allclose(t.layers["1.dw"].std, ((w**2).sum(1) * r.std**2).sqrt())
    assert torch.allclose(t.layers["1.dw"].mean, base.layers["1.dw"].mean)  # the mean rule has no ρ
    assert weight_targets(model, rule="moments", depthwise_coherence=0.5).settings["depthwise_coherence"] == 0.5


def test_pixel_correlation_matches_the_coherence_limits_and_a_monte_carlo_field():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4)).eval()
    for r, rho in ((1.0, 1.0), (0.0, 0.0)):  # r^d with r = 1 (constant window) / r = 0 (independent taps)
        a = weight_targets(model, rule="moments", relu_aware=True, coherence=rho)
        b = weight_targets(model, rule="moments", relu_aware=True, pixel_correlation=r)
        for k in a.layers:
            assert torch.allclose(a.layers[k].std, b.layers[k].std, rtol=1e-3)
            assert torch.allclose(a.layers[k].mean, b.layers[k].mean, rtol=1e-3, atol=1e-6)
    # a zero-sum (edge) kernel on a field whose correlation decays as 0.8^distance: ρ = 1 predicts no spread,
    # r = 0.8 predicts the spread the field really gives
    edge = nn.Conv2d(1, 1, 3, bias=False)
    with torch.no_grad():
        edge.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]).view(1, 1, 3, 3))
    edge.input_spec = InputSpec(size=8, mean=(0.5,), std=(0.25,))
    pos = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij"), -1).reshape(-1, 2)
    cov = 0.8 ** torch.cdist(pos, pos)
    patches = torch.randn(200_000, 9) @ torch.linalg.cholesky(cov).T
    measured = (patches @ edge.weight.reshape(9)).std()
    one = Stat(torch.zeros(1), torch.ones(1))
    from gzsq.targets import _layer_moments

    assert float(_layer_moments(edge, one, coherence=1.0).std) < 1e-6
    assert float(_layer_moments(edge, one, pixel_correlation=0.8).std) == pytest.approx(float(measured), rel=0.02)
    with pytest.raises(ConfigError, match="pixel_correlation"):
        weight_targets(model, rule="moments", pixel_correlation=1.5)


def test_one_step_is_the_rule_weight_targets_applies_at_each_layer():
    """Local targets use `one_step`; on the propagated input statistics it gives the propagated targets back."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), InvertedResidual()).eval()
    from gzsq.targets import _rectify, one_step

    for kwargs in ({"coherence": 1.0}, {"coherence": 1.0, "depthwise_coherence": 0.0}, {"pixel_correlation": 0.8}):
        t = weight_targets(model, rule="moments", relu_aware=True, **kwargs)
        dw_in = _rectify(t.layers["1.expand"], 6.0)
        got = one_step(model[1].dw, dw_in, kwargs.get("coherence", 0.0), kwargs.get("depthwise_coherence"),
                       kwargs.get("pixel_correlation"))
        assert torch.allclose(got.mean, t.layers["1.dw"].mean) and torch.allclose(got.std, t.layers["1.dw"].std)
        first = one_step(model[0], Stat(torch.zeros(3), torch.ones(3)), kwargs.get("coherence", 0.0),
                         kwargs.get("depthwise_coherence"), kwargs.get("pixel_correlation"))
        assert torch.allclose(first.std, t.layers["0"].std)
