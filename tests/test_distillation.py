"""The distillation engine: deterministic, early-stopping, divergence caught, sets saved."""

import pytest
import torch

from gzsq.sources.saved import load_calibration, save_calibration, save_preview
from gzsq.distillation import loop as distill_loop
from gzsq.distillation.loop import Checkpoint, DistillConfig, Objective, distill_images
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


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "matrix"])
def test_fused_channel_statistics_match_the_textbook_formula_and_gradient(layout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 6, generator=gen, dtype=torch.double) * 2 + 1.5
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "matrix":
        x = x[:, :, 0, 0].contiguous()
    dims = [0] + list(range(2, x.dim()))
    mean, var = distill_loop._ChannelMoments.apply(x, len(x))
    assert torch.allclose(mean, x.mean(dims)) and torch.allclose(var, x.var(dims, correction=0))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(distill_loop._ChannelMoments.apply, (x, len(x)))


def test_model_is_given_back_in_the_default_layout(tiny):
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=2, lr=0.1, batch_size=4, loss="kl")
    images, _ = distill_images(net, _objective(net), 4, (3, 8, 8), cfg, seed=0)
    assert images.is_contiguous()
    assert all(p.is_contiguous() for p in net.parameters())


def test_early_stop_and_expansion(tiny):
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=400, lr=1e-4, batch_size=4, loss="z", early_stop_patience=5, distill_images=4)
    images, log = distill_images(net, _objective(net), 10, (3, 8, 8), cfg, seed=0)
    assert images.shape == (10, 3, 8, 8)
    assert log["stopped_early"] and log["iterations"][0] < 400


def test_pixel_budget_sizes_the_optimized_subset():
    cfg = DistillConfig(distill_pixels=128 * 32 * 32)
    assert cfg.images_to_optimize(256, (3, 32, 32)) == 128
    assert cfg.images_to_optimize(64, (3, 224, 224)) == 16  # budget covers 2.6 images: floor of 16
    assert cfg.images_to_optimize(10, (3, 32, 32)) == 10  # never more than asked for
    assert DistillConfig(distill_pixels=1024, distill_images=5).images_to_optimize(64, (3, 32, 32)) == 5
    assert DistillConfig().images_to_optimize(64, (3, 224, 224)) == 64
    lower = DistillConfig(distill_pixels=128 * 32 * 32, min_distill_images=8)
    assert lower.images_to_optimize(64, (3, 224, 224)) == 8 and lower.images_to_optimize(256, (3, 32, 32)) == 128


def test_crop_expansion_makes_resized_crops_of_the_distilled_images():
    gen = torch.Generator().manual_seed(0)
    flat = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 16, 16).contiguous()  # image k is all k
    out = distill_loop._expand(flat, 12, gen, crop_scale=0.3)
    assert out.shape == (12, 2, 16, 16) and torch.equal(out[:3], flat)
    per_image = out.flatten(1)
    assert torch.equal(per_image.min(1).values, per_image.max(1).values)  # a crop of a flat image stays flat
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16).contiguous()
    crops = distill_loop._expand(ramp, 6, torch.Generator().manual_seed(1), crop_scale=0.3)[1:]
    assert crops.min() >= 0 and crops.max() <= 1  # bilinear resizing stays inside the image's range
    steps = crops[..., 1:] - crops[..., :-1]
    # a crop climbs the ramp in steps no larger than the image's (a flipped one descends), most in smaller ones
    largest = steps.abs().amax(dim=(1, 2, 3))
    assert (largest <= 1 / 15 + 1e-6).all() and (largest < 1 / 15 - 1e-6).sum() >= 3
    with pytest.raises(ConfigError, match="expand_crop_scale"):
        DistillConfig(expand_crop_scale=0.0)


def test_augmented_view_is_a_differentiable_crop_drawn_from_the_step_alone():
    flat = torch.full((2, 3, 12, 12), 0.7)
    assert torch.allclose(distill_loop._augmented_view(flat, 0.5, 2, (1, 0, 3)), flat)  # a crop of a flat image
    x = torch.linspace(0, 1, 12).expand(4, 1, 12, 12).contiguous().requires_grad_(True)
    view = distill_loop._augmented_view(x, 0.5, 4, (0, 0, 5))
    assert view.shape == x.shape and view.min() >= 0 and view.max() <= 1
    assert torch.equal(view, distill_loop._augmented_view(x, 0.5, 4, (0, 0, 5)))  # the same step, the same crops
    assert not torch.equal(view, distill_loop._augmented_view(x, 0.5, 4, (0, 0, 6)))
    steps = (view[..., 1:] - view[..., :-1]).abs().amax(dim=(1, 2, 3))
    assert (steps <= 1 / 11 + 1e-6).all()  # a resized crop is never steeper than the ramp it was cut from
    view.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="augment_crop_scale"):
        DistillConfig(augment_crop_scale=1.5)


def test_centred_colour_moves_each_channel_to_mean_zero_inside_the_pixel_range(tiny):
    gen = torch.Generator().manual_seed(0)
    cast = torch.randn(4, 3, 6, 6, generator=gen) * 0.3 + torch.tensor([0.5, -0.4, 0.2]).view(1, 3, 1, 1)
    bounds = (torch.full((1, 3, 1, 1), -0.8), torch.full((1, 3, 1, 1), 0.8))
    free = distill_loop._set_colour(cast, True, 0.0)
    assert torch.allclose(free.mean((0, 2, 3)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(free - cast, (free - cast)[:1, :, :1, :1].expand_as(cast))  # one shift per channel
    clamped = distill_loop._set_colour(cast, True, 0.0, bounds)
    assert clamped.min() >= -0.8 and clamped.max() <= 0.8
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=3, lr=0.1, batch_size=4, loss="kl", centre_colour=True, distill_images=4)
    images, _ = distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=0)
    assert torch.allclose(images[:4].mean((0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_channel_contrast_scales_each_channel_to_its_share_of_the_pixel_range(tiny):
    gen = torch.Generator().manual_seed(1)
    flat = torch.randn(4, 3, 6, 6, generator=gen) * torch.tensor([0.05, 0.1, 0.2]).view(1, 3, 1, 1) + 0.1
    bounds = (torch.tensor([-1.0, -2.0, -4.0]).view(1, 3, 1, 1), torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1))
    out = distill_loop._set_colour(flat, False, 0.1, bounds)
    assert torch.allclose(out.std((0, 2, 3)), torch.tensor([0.2, 0.4, 0.8]), rtol=1e-4)  # 0.1 of each range
    assert torch.allclose(out.mean((0, 2, 3)), flat.mean((0, 2, 3)), atol=1e-5)  # means kept without centring
    wide = distill_loop._set_colour(flat, True, 0.5, bounds)
    assert (wide.abs() <= bounds[1]).all() and (wide == bounds[1]).any()  # clamped to the range
    with pytest.raises(ConfigError, match="pixel range"):
        distill_loop._set_colour(flat, False, 0.1)
    with pytest.raises(ConfigError, match="channel_std_share"):
        DistillConfig(channel_std_share=0.8)
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=3, lr=0.1, batch_size=4, loss="kl", centre_colour=True, channel_std_share=0.02,
                        distill_images=4)
    lo, hi = torch.full((1, 3, 1, 1), -50.0), torch.full((1, 3, 1, 1), 50.0)
    images, _ = distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=0, pixel_bounds=(lo, hi))
    assert torch.allclose(images[:4].std((0, 2, 3)), torch.full((3,), 2.0), rtol=1e-4)


def test_smoothness_prior_on_pixels_is_the_normalized_one_over_the_range_width(tiny):
    net = fold_bn(tiny)
    bounds = (torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.0))  # 4 wide
    base = dict(iterations=3, lr=0.1, batch_size=4, loss="kl")
    on_pixels, _ = distill_images(net, _objective(net), 4, (3, 8, 8),
                                  DistillConfig(**base, tv_weight=8.0, tv_on_pixels=True), seed=0, pixel_bounds=bounds)
    normalized, _ = distill_images(net, _objective(net), 4, (3, 8, 8), DistillConfig(**base, tv_weight=2.0),
                                   seed=0, pixel_bounds=bounds)
    assert torch.allclose(on_pixels, normalized, atol=1e-6)
    stronger, _ = distill_images(net, _objective(net), 4, (3, 8, 8), DistillConfig(**base, tv_weight=8.0),
                                 seed=0, pixel_bounds=bounds)
    assert not torch.allclose(stronger, normalized, atol=1e-4)
    with pytest.raises(ConfigError, match="pixel range"):
        distill_images(net, _objective(net), 4, (3, 8, 8), DistillConfig(**base, tv_weight=8.0, tv_on_pixels=True))


def test_mixed_preset_is_the_default_with_half_the_set_noise():
    from dataclasses import replace

    from gzsq.sources.gzsq import recipe_for

    default, mixed = recipe_for("default"), recipe_for("mixed")
    assert mixed.targets == default.targets and mixed.distill == replace(default.distill, noise_fraction=0.5)
    assert default.distill.noise_fraction == 0.0


def test_local_preset_is_the_default_with_local_targets():
    from dataclasses import replace

    from gzsq.sources.gzsq import recipe_for

    default, local = recipe_for("default"), recipe_for("local")
    assert local.distill == default.distill and local.targets == replace(default.targets, local=True)
    assert not default.targets.local


def test_default_preset_optimizes_a_pixel_budget(tiny):
    from gzsq.sources.gzsq import recipe_for
    net = fold_bn(tiny)
    cfg = recipe_for("default").distill
    images, log = distill_images(net, _objective(net), 40, (3, 8, 8), cfg, seed=0)
    assert images.shape == (40, 3, 8, 8)
    assert log["iterations"] == [cfg.iterations]  # one batch: min(40, 256·32²/64) images optimized
    assert recipe_for("thorough").distill.images_to_optimize(256, (3, 32, 32)) == 256
    # local-long, for learned rounding: 8 distinct images at 224×224 (the default 16), still all 256 at 32×32
    long = recipe_for("local-long").distill
    assert long.images_to_optimize(64, (3, 224, 224)) == 8 and long.images_to_optimize(256, (3, 32, 32)) == 256
    assert long.expand_crop_scale == 0.5 and cfg.expand_crop_scale == 1.0  # its copies are crops, the default's flips
    assert long.augment_crop_scale == 0.5 and cfg.augment_crop_scale == 0.0  # distilled through crops of themselves
    assert long.tv_weight == 440.0 and long.tv_on_pixels and long.centre_colour  # smooth on any scale, no cast
    assert not cfg.centre_colour and not cfg.tv_on_pixels
    assert cfg.images_to_optimize(64, (3, 224, 224)) == 16


def test_nan_loss_raises(tiny):
    net = fold_bn(tiny)
    obj = Objective({"conv1": (torch.full((8,), float("nan")), torch.ones(8))})
    with pytest.raises(DistillationDivergedError):
        distill_images(net, obj, 4, (3, 8, 8), DistillConfig(iterations=3, batch_size=4), seed=0)


def test_bad_config_refused():
    with pytest.raises(ConfigError):
        DistillConfig(loss="cosine")
    for share in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="noise_fraction"):
            DistillConfig(noise_fraction=share)
    for floor in (1, 0, 2.5, True):
        with pytest.raises(ConfigError, match="min_distill_images"):
            DistillConfig(min_distill_images=floor)


def test_bad_init_settings_refused():
    for kwargs in ({"init_spectrum": -0.5}, {"init_spectrum": 2.5}, {"init_colour": 1.0}, {"init_colour": -0.1},
                   {"grad_spectrum": -1.0}, {"grad_spectrum": 3.0}):
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            DistillConfig(**kwargs)


def test_natural_noise_has_the_asked_spectrum_and_colour_correlation():
    """Slope 1 gives a 1/f amplitude spectrum (log-log slope of the power near -2); colour c gives channels that
    correlate by about c; the result has zero mean and unit variance; white noise stays white with neither."""
    white = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x = distill_loop.natural_noise(white, 1.0, 0.85)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    power = torch.fft.rfft2(x).abs().pow(2).mean((0, 1))
    f = distill_loop.spatial_frequency(64, 64)
    keep = (f > 0.03) & (f < 0.4)
    logf, logp = f[keep].log(), power[keep].log()
    slope = float(((logf - logf.mean()) * (logp - logp.mean())).sum() / ((logf - logf.mean()) ** 2).sum())
    assert -2.2 < slope < -1.8
    corr = torch.corrcoef(x.transpose(0, 1).reshape(3, -1))
    assert torch.all((corr[~torch.eye(3, dtype=bool)] - 0.85).abs() < 0.05)
    plain = torch.corrcoef(white.transpose(0, 1).reshape(3, -1))
    assert torch.all(plain[~torch.eye(3, dtype=bool)].abs() < 0.02)
    # neighbouring pixels: nearly equal after, independent before
    def neighbour_corr(t):
        return float(torch.corrcoef(torch.stack([t[..., :-1].reshape(-1), t[..., 1:].reshape(-1)]))[0, 1])
    assert neighbour_corr(x) > 0.6 and abs(neighbour_corr(white)) < 0.02


def test_natural_init_changes_only_the_start(tiny):
    """init_spectrum/init_colour 0 keep the white N(0, 1) start bit for bit; set, the run is still deterministic."""
    net = fold_bn(tiny)
    obj = _objective(net)
    base = DistillConfig(iterations=2, batch_size=4, lr=0.1)
    white, _ = distill_images(net, obj, 4, (3, 8, 8), base, seed=3)
    again, _ = distill_images(net, obj, 4, (3, 8, 8), DistillConfig(**{**base.__dict__, "init_spectrum": 0.0}), seed=3)
    assert torch.equal(white, again)
    natural = DistillConfig(**{**base.__dict__, "init_spectrum": 1.0, "init_colour": 0.85})
    a, _ = distill_images(net, obj, 4, (3, 8, 8), natural, seed=3)
    b, _ = distill_images(net, obj, 4, (3, 8, 8), natural, seed=3)
    assert torch.equal(a, b) and not torch.allclose(a, white)


def test_gradient_spectrum_makes_smoother_images_from_the_same_start(tiny):
    """With grad_spectrum the images start as the same white noise but every step is low-pass shaped: what the steps
    added has neighbouring pixels far more correlated than without."""
    net = fold_bn(tiny)
    obj = _objective(net)
    base = DistillConfig(iterations=30, batch_size=8, lr=0.1, input_weight=0.0)
    plain, _ = distill_images(net, obj, 8, (3, 16, 16), base, seed=2)
    start = torch.randn((8, 3, 16, 16), generator=torch.Generator().manual_seed(2))
    shaped, _ = distill_images(net, obj, 8, (3, 16, 16), DistillConfig(**{**base.__dict__, "grad_spectrum": 1.0}),
                               seed=2)

    def neighbour_corr(t):
        return float(torch.corrcoef(torch.stack([t[..., :-1].reshape(-1), t[..., 1:].reshape(-1)]))[0, 1])
    moved_plain, moved_shaped = plain - start, shaped - start
    assert moved_shaped.abs().mean() > 0.05  # the images did move
    assert neighbour_corr(moved_shaped) > neighbour_corr(moved_plain) + 0.3


def test_save_load_roundtrip_and_preview(tmp_path, tiny):
    images = torch.randn(5, 3, 8, 8)
    calib = Calibration(images, "gzsq", 7, 1.5, {"loss_curve": [1.0, 0.5]})
    path = tmp_path / "set.npz"
    save_calibration(path, calib, {"model": "tiny"})
    back = load_calibration(path)
    assert torch.equal(back.images, images) and back.seed == 7 and back.log["meta"]["model"] == "tiny"
    save_preview(tmp_path / "grid.png", images, tiny.input_spec)
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as grid:  # 5 images of 8×8 (+2 px border) in 3×2, scaled 16×
        assert grid.size == (3 * 10 * 16, 2 * 10 * 16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def _half_local(objective):
    """The objective with a stand-in local rule for its first batch only (as preset half-local splits a set)."""
    def rule(layer, mean, std):
        return mean.mean() * torch.ones(layer.weight.shape[0]), std.mean() * torch.ones(layer.weight.shape[0])
    return Objective(objective.targets, local_rule=rule, local_batches=1)


# propagated targets / the first batch local, the second not / the same, the local batch with more steps /
# propagated targets, the images seen through random crops each step and crops as the copies
@pytest.mark.parametrize("split", [False, True, "local steps", "crops"])
@pytest.mark.parametrize("stop_after", [13, 45])  # inside batch 1 / inside batch 2 (after a batch boundary)
def test_interrupted_run_resumes_to_the_same_images(tiny, tmp_path, monkeypatch, stop_after, split):
    """Adam, scheduler and RNG states are checkpointed: resuming equals never stopping, bit for bit."""
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=25, lr=0.1, batch_size=4, loss="kl", ce_weight=0.1, distill_images=8,
                        early_stop_patience=18, local_iterations=30 if split == "local steps" else 0,
                        augment_crop_scale=0.5 if split == "crops" else 0.0,
                        expand_crop_scale=0.5 if split == "crops" else 1.0)
    local = split in (True, "local steps")
    args = (net, _half_local(_objective(net)) if local else _objective(net), 12, (3, 8, 8), cfg)
    reference, ref_log = distill_images(*args, seed=3, num_classes=5)
    checkpoint = Checkpoint(str(tmp_path / "run.partial"), every=7, resume=True, key="tiny")
    kl, calls = distill_loop.LOSSES["kl"], {"n": 0}

    def stop(*a):
        calls["n"] += 1
        if calls["n"] == stop_after * 4:  # 3 targets + the input term per iteration
            raise KeyboardInterrupt
        return kl(*a)

    monkeypatch.setitem(distill_loop.LOSSES, "kl", stop)
    with pytest.raises(KeyboardInterrupt):
        distill_images(*args, seed=3, num_classes=5, checkpoint=checkpoint)
    monkeypatch.setitem(distill_loop.LOSSES, "kl", kl)
    resumed, log = distill_images(*args, seed=3, num_classes=5, checkpoint=checkpoint)
    assert torch.equal(resumed, reference)
    assert log["loss_curve"] == ref_log["loss_curve"] and log["iterations"] == ref_log["iterations"]


def test_checkpoint_of_another_run_or_garbage_is_refused(tiny, tmp_path):
    net = fold_bn(tiny)
    cfg = DistillConfig(iterations=4, batch_size=4)
    path = tmp_path / "c.partial"
    distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=0, checkpoint=Checkpoint(str(path), every=2))
    assert path.exists()  # batch boundary saved; the caller removes it when done
    with pytest.raises(ConfigError, match="different run"):
        distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=1,
                       checkpoint=Checkpoint(str(path), every=2, resume=True))
    path.write_bytes(b"junk")
    with pytest.raises(ConfigError, match="delete it"):
        distill_images(net, _objective(net), 8, (3, 8, 8), cfg, seed=0,
                       checkpoint=Checkpoint(str(path), every=2, resume=True))
    with pytest.raises(ConfigError, match="positive"):
        Checkpoint(str(path), every=0)


def test_local_targets_follow_the_current_inputs(tiny):
    """Local mode: each target layer is pulled towards its rule on the batch's own input statistics. The run is
    deterministic, differs from the propagated targets' run, and needs the moments rule."""
    from gzsq.config import CalibrationConfig
    from gzsq.sources.calibrate import calibrate

    fast = (("iterations", 3), ("distill_pixels", 0))
    runs = [calibrate(tiny, CalibrationConfig(source="gzsq", n_images=8, seed=1, setting="bn-free", preset="default"),
                      overrides=fast + extra).images for extra in ((("local", True),), (("local", True),), ())]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    with pytest.raises(ConfigError, match="moments"):
        calibrate(tiny, CalibrationConfig(source="gzsq", n_images=8, seed=1, setting="bn-free", preset="paper"),
                  overrides=(("local", True), ("iterations", 2)))


def test_local_rule_receives_each_layers_input_statistics(tiny):
    """The loop hands the local rule the batch's per-channel input (mean, std) of the layer, every step."""
    net = fold_bn(tiny)
    obj = _objective(net)
    seen = []

    def rule(layer, mean, std):
        seen.append((layer, mean.clone(), std.clone()))
        return torch.zeros(layer.weight.shape[0]), torch.ones(layer.weight.shape[0])

    local = Objective(obj.targets, local_rule=rule)
    distill_images(net, local, 4, (3, 8, 8), DistillConfig(iterations=2, batch_size=4, lr=0.1), seed=0)
    modules = dict(net.named_modules())
    assert len(seen) == 2 * len(obj.targets)
    assert {id(layer) for layer, _, _ in seen} == {id(modules[k]) for k in obj.targets}
    first = next(k for k in obj.targets)
    layer, mean, std = next(s for s in seen if s[0] is modules[first])
    assert mean.shape == (layer.weight.shape[1] * getattr(layer, "groups", 1),) and torch.all(std > 0)


def test_a_checkpoint_of_propagated_targets_is_not_resumed_as_local(tmp_path):
    """The two objectives list the same targets; the checkpoint key still tells them apart."""
    from gzsq.distillation.checkpoint import run_key

    targets = {"conv1": (torch.zeros(2), torch.ones(2))}
    ckpt = Checkpoint(tmp_path / "c.pt")
    plain = run_key(ckpt, Objective(targets), 4, (3, 8, 8), DistillConfig(), 0, 10)
    local = run_key(ckpt, Objective(targets, local_rule=lambda layer, m, s: (m, s)), 4, (3, 8, 8), DistillConfig(), 0, 10)
    assert plain != local
    split = run_key(ckpt, Objective(targets, local_rule=lambda layer, m, s: (m, s), local_batches=1), 4, (3, 8, 8),
                    DistillConfig(), 0, 10)
    assert split not in (plain, local)


def test_local_targets_only_in_the_first_local_batches(tiny):
    """local_batches=1: the rule is asked during the first batch's steps only; the second matches the listed
    targets, exactly as a run of propagated targets does there."""
    net = fold_bn(tiny)
    obj = _objective(net)
    batches_seen = []

    def rule(layer, mean, std):
        batches_seen.append(len(batches_seen) // len(obj.targets) // 2)  # 2 steps of every target layer per batch
        return torch.zeros(layer.weight.shape[0]), torch.ones(layer.weight.shape[0])

    cfg = DistillConfig(iterations=2, batch_size=4, lr=0.1)
    split, _ = distill_images(net, Objective(obj.targets, local_rule=rule, local_batches=1), 8, (3, 8, 8), cfg, seed=0)
    plain, _ = distill_images(net, obj, 8, (3, 8, 8), cfg, seed=0)
    assert set(batches_seen) == {0} and len(batches_seen) == 2 * len(obj.targets)
    assert torch.equal(split[4:], plain[4:]) and not torch.equal(split[:4], plain[:4])


def test_channel_correlation_measures_channels_moving_together():
    from gzsq.distillation.losses import channel_correlation

    gen = torch.Generator().manual_seed(0)
    independent = torch.randn(64, 8, 16, 16, generator=gen)
    shared = torch.randn(64, 1, 16, 16, generator=gen).repeat(1, 8, 1, 1)
    assert float(channel_correlation(independent)) < 0.01
    assert float(channel_correlation(shared + 0.01 * independent)) > 0.99
    assert float(channel_correlation(torch.randn(4, 1, 8, 8, generator=gen))) == 0.0  # one channel: nothing to pair
    assert float(channel_correlation(torch.randn(32, 6, generator=gen))) < 0.1  # a linear layer's (N, C) output


def _target_outputs(net, obj, images) -> dict:
    """The outputs of the objective's target layers on `images`, by module name."""
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: outputs.setdefault(k, o)) for k, m in net.named_modules()
             if k in obj.targets]
    with torch.no_grad():
        net(images)
    for h in hooks:
        h.remove()
    return outputs


def _term_off_and_on(tiny, field: str, weight: float):
    """Distil 16 tiny-net images without an optional loss term, with it at weight 0 (must be the same bits) and at
    `weight`. → (net, objective, images without, images with)."""
    net = fold_bn(tiny)
    obj = _objective(net)
    base = DistillConfig(iterations=30, lr=0.1, batch_size=16, loss="kl")
    plain, _ = distill_images(net, obj, 16, (3, 8, 8), base, seed=3)
    off, _ = distill_images(net, obj, 16, (3, 8, 8), DistillConfig(**{**base.__dict__, field: 0.0}), seed=3)
    assert torch.equal(plain, off)
    on, _ = distill_images(net, obj, 16, (3, 8, 8), DistillConfig(**{**base.__dict__, field: weight}), seed=3)
    return net, obj, plain, on


def test_decorrelation_term_lowers_the_channels_correlation(tiny):
    """Off (0) leaves a run bit for bit as it was; on, the target layers' channels move together less."""
    from gzsq.distillation.losses import channel_correlation

    net, obj, plain, decorrelated = _term_off_and_on(tiny, "decorrelation_weight", 100.0)

    def together(images):
        outputs = _target_outputs(net, obj, images)
        return sum(float(channel_correlation(o)) for o in outputs.values()) / len(outputs)

    assert together(decorrelated) < together(plain)


def test_per_image_term_brings_each_image_closer_to_the_targets(tiny):
    """Off (0) leaves a run bit for bit as it was; on, the images' own statistics sit nearer the targets
    (mean over images of each image's loss), and the loss function gives one value per image row."""
    from gzsq.distillation.losses import LOSSES
    from gzsq.distillation.loop import _per_image_loss

    rows = torch.randn(5, 7)
    assert LOSSES["kl"](rows, rows.abs() + 1, torch.zeros(7), torch.ones(7)).shape == (5,)
    net, obj, plain, each = _term_off_and_on(tiny, "per_image_weight", 10.0)

    def per_image(images):
        return float(_per_image_loss(_target_outputs(net, obj, images), obj.targets, LOSSES["kl"]).mean())

    assert per_image(each) < per_image(plain)


@pytest.mark.parametrize("field", ["decorrelation_weight", "per_image_weight"])
def test_bad_term_weights_refused(field):
    for value in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=field):
            DistillConfig(**{field: value})


def test_cross_entropy_spreads_the_images_over_classes(tiny):
    """ce_weight pushes each distilled image towards a random class of its own, so the folded net's class
    probabilities differ more from image to image than on images matched to the statistics alone (why
    `local-long` uses it: class-specific images excite more of a deep layer's directions)."""
    net = fold_bn(tiny)
    spread = {}
    for weight in (0.0, 1.0):
        cfg = DistillConfig(iterations=60, lr=0.1, batch_size=16, loss="kl", ce_weight=weight)
        images, _ = distill_images(net, _objective(net), 16, (3, 8, 8), cfg, seed=0, num_classes=5)
        with torch.no_grad():
            spread[weight] = float(net(images).softmax(1).std(0).mean())
    assert spread[1.0] > 1.1 * spread[0.0], spread
