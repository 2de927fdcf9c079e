"""Contract test for every registered calibration source: shape, dtype, finite, seeded."""

import numpy as np
import pytest
import torch

from gzsq.errors import ConfigError, SourceNotApplicableError
from gzsq.fold import fold_bn
from gzsq.sources import SourceOptions, available_sources, make_calibration

FAST = (("iterations", 5), ("batch_size", 4))


def _options(name, tmp_path, setting="bn"):
    if name == "real":
        images = (np.random.default_rng(0).random((20, 8, 8, 3)) * 255).astype(np.uint8)
        np.savez(tmp_path / "d.npz", images=images, labels=np.arange(20) % 5)
        return SourceOptions(setting=setting, calib_data=str(tmp_path / "d.npz"))
    return SourceOptions(setting=setting, overrides=FAST if name in ("gzsq", "zeroq") else ())


@pytest.mark.parametrize("name", available_sources())
def test_source_contract(name, tiny, tmp_path):
    assert set(available_sources()) >= {"gzsq", "zeroq", "gaussian", "uniform", "real"}
    a = make_calibration(name, tiny, 6, seed=1, options=_options(name, tmp_path))
    b = make_calibration(name, tiny, 6, seed=1, options=_options(name, tmp_path))
    c = make_calibration(name, tiny, 6, seed=2, options=_options(name, tmp_path))
    assert a.images.shape == (6, 3, 8, 8) and a.images.dtype == torch.float32
    assert torch.isfinite(a.images).all()
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.source == name


def test_zeroq_refuses_bn_free(tiny):
    with pytest.raises(SourceNotApplicableError, match="BatchNorm"):
        make_calibration("zeroq", fold_bn(tiny), 4, options=SourceOptions(setting="bn-free"))


def test_real_needs_data_and_enough_images(tiny, tmp_path):
    with pytest.raises(ConfigError):
        make_calibration("real", tiny, 4)
    with pytest.raises(ConfigError):
        make_calibration("real", tiny, 50, options=_options("real", tmp_path))


def test_unknown_source_and_bad_n(tiny):
    with pytest.raises(ConfigError):
        make_calibration("imagenet", tiny, 4)
    with pytest.raises(ConfigError):
        make_calibration("gaussian", tiny, 0)


def test_gzsq_noise_fraction_leaves_the_last_images_as_noise(tiny):
    """noise_fraction: that share of the set is the gaussian source's images (its last rows), the rest distilled."""
    folded = fold_bn(tiny)
    mixed = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(
        setting="bn-free", overrides=FAST + (("noise_fraction", 0.5),)))
    noise = make_calibration("gaussian", folded, 8, seed=3, options=SourceOptions(setting="bn-free")).images
    assert mixed.images.shape == (8, 3, 8, 8) and mixed.log["noise_images"] == 4
    assert torch.equal(mixed.images[4:], noise[4:])
    assert not torch.equal(mixed.images[:4], noise[:4])  # distilled: moved away from their noise start
    plain = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(setting="bn-free", overrides=FAST))
    assert plain.log["noise_images"] == 0


def test_auto_preset_picks_local_targets_for_depthwise_separable_networks(tiny):
    """`auto` (the default) means `local-classes` where some conv is depthwise (`local-long` when the job learns
    its rounding), `local` where the job sets 8-bit ranges; elsewhere `half-local` for a job that learns its
    rounding, `default` for ranges below 8 bits; named presets stay."""
    import gzsq
    from gzsq.config import CalibrationConfig, ImagesFor, QuantConfig, ReconstructConfig
    from gzsq.sources.gzsq import is_depthwise_separable, resolve_preset

    mobilenet = gzsq.load_model("efficientnet-lite0")  # depthwise-separable, its weights ship with gzsq
    assert is_depthwise_separable(mobilenet) and not is_depthwise_separable(tiny)
    assert resolve_preset("auto", mobilenet) == "local-classes" and resolve_preset("auto", tiny) == "local"
    assert resolve_preset("auto", tiny, ImagesFor(a_bits=4)) == "default"
    assert resolve_preset("auto", tiny, ImagesFor(a_bits=6)) == "default"
    assert resolve_preset("auto", mobilenet, ImagesFor(a_bits=4)) == "local-classes"
    assert CalibrationConfig().resolved(tiny, ImagesFor(a_bits=4)).preset == "default"
    # images that will train learned rounding: half-local targets where the architecture does not pick local
    assert resolve_preset("auto", tiny, ImagesFor(a_bits=4, reconstructing=True)) == "half-local"
    assert resolve_preset("auto", tiny, ImagesFor(reconstructing=True)) == "half-local"
    # ... and on depthwise-separable networks local targets distilled five times longer
    assert resolve_preset("auto", mobilenet, ImagesFor(a_bits=4, reconstructing=True)) == "local-long"
    assert resolve_preset("auto", mobilenet, ImagesFor(reconstructing=True)) == "local-long"
    assert resolve_preset("default", tiny, ImagesFor(a_bits=4, reconstructing=True)) == "default"
    w4a4_learned = ImagesFor.job(QuantConfig(w_bits=4, a_bits=4), ReconstructConfig())
    assert w4a4_learned == ImagesFor(a_bits=4, reconstructing=True)
    assert CalibrationConfig().resolved(tiny, w4a4_learned).preset == "half-local"
    assert ImagesFor.job(QuantConfig(w_bits=4, a_bits=8)) == ImagesFor()
    assert resolve_preset("longer", mobilenet) == "longer"
    assert CalibrationConfig().preset == "auto"
    assert CalibrationConfig().resolved(mobilenet).preset == "local-classes"
    assert CalibrationConfig(preset="mixed").resolved(tiny).preset == "mixed"
    assert CalibrationConfig(source="gaussian").resolved(mobilenet).preset == "auto"  # only gzsq has presets
    with pytest.raises(ConfigError, match="unknown gzsq preset 'fancy'"):
        CalibrationConfig(preset="fancy").resolved(tiny)


def test_auto_preset_distills_what_its_choice_distills(tiny):
    a = make_calibration("gzsq", tiny, 6, seed=3, options=SourceOptions(preset="auto", overrides=FAST))
    b = make_calibration("gzsq", tiny, 6, seed=3, options=SourceOptions(preset="local", overrides=FAST))
    assert torch.equal(a.images, b.images) and a.log["preset"] == "local"  # a source alone: the int8 job's set


def test_gzsq_local_fraction_splits_the_set_between_local_and_propagated_targets(tiny, tmp_path):
    """local_fraction 0.5: the first half is what local targets distil alone, the second what the propagated
    targets distil there (each half optimized in batches of its own); the split resumes like any distillation."""
    from gzsq.distillation.checkpoint import Checkpoint

    folded = fold_bn(tiny)
    local = FAST + (("local", True),)
    half_local = local + (("local_fraction", 0.5),)
    half = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(setting="bn-free", preset="default", overrides=half_local))
    first = make_calibration("gzsq", folded, 4, seed=3, options=SourceOptions(setting="bn-free", preset="default", overrides=local))
    plain = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(setting="bn-free", preset="default", overrides=FAST))
    assert half.images.shape == (8, 3, 8, 8) and half.log["local_batches"] == 1
    assert torch.equal(half.images[:4], first.images)
    assert torch.equal(half.images[4:], plain.images[4:])
    assert not torch.equal(half.images[:4], plain.images[:4])
    saved = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(
        setting="bn-free", preset="default", overrides=half_local, checkpoint=Checkpoint(str(tmp_path / "c.pt"), every=2)))
    assert torch.equal(saved.images, half.images)
    with pytest.raises(ConfigError, match="local_fraction"):
        make_calibration("gzsq", folded, 8, options=SourceOptions(overrides=local + (("local_fraction", 0.0),)))


def test_gzsq_local_iterations_set_the_local_parts_steps_only(tiny):
    """local_iterations: the local half is what local targets distil alone in that many steps, the propagated
    half what `iterations` steps give there."""
    folded = fold_bn(tiny)
    local = (("iterations", 3), ("batch_size", 4), ("local", True))
    half = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(
        setting="bn-free", preset="default", overrides=FAST + (("local", True), ("local_fraction", 0.5), ("local_iterations", 3))))
    first = make_calibration("gzsq", folded, 4, seed=3, options=SourceOptions(setting="bn-free", preset="default", overrides=local))
    plain = make_calibration("gzsq", folded, 8, seed=3, options=SourceOptions(setting="bn-free", preset="default", overrides=FAST))
    assert half.log["iterations"] == [3, 5]
    assert torch.equal(half.images[:4], first.images) and torch.equal(half.images[4:], plain.images[4:])
    with pytest.raises(ConfigError, match="local_iterations"):
        make_calibration("gzsq", folded, 8, options=SourceOptions(overrides=(("local_iterations", -1),)))


def test_gzsq_objective_floors_target_stds_and_carries_the_local_rule(tiny):
    """The targets distillation matches: every std at least std_floor × its layer's median, the local rule only
    when asked for."""
    from gzsq.config import TargetConfig
    from gzsq.sources.gzsq import layer_targets, objective_for

    folded = fold_bn(tiny)
    t = TargetConfig(rule="moments", relu_aware=True, coherence=1.0, std_floor=0.5)
    targets = layer_targets(folded, t)
    assert targets and all(name in dict(folded.named_modules()) for name in targets)
    for mean, std in targets.values():
        assert mean.shape == std.shape
        assert bool((std >= 0.5 * std.median() - 1e-6).all())
    assert objective_for(folded, t).local_rule is None
    local = objective_for(folded, TargetConfig(rule="moments", relu_aware=True, coherence=1.0, local=True))
    assert local.local_rule is not None and set(local.targets) == set(targets)


def test_oracle_experiment_swaps_bn_statistics_only_into_the_variants_that_name_them(tiny):
    """experiments/oracle_targets.py: the weights-only variants keep gzsq's targets as they are; the oracle ones
    (including `local-scale`, which rescales the BN statistics) put (β, |γ|) in place of every BN-fed conv's."""
    import sys
    from pathlib import Path

    from gzsq.sources.gzsq import objective_for, recipe_for

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from oracle_targets import bn_statistics, swapped

    t = recipe_for("half-local").targets
    targets = objective_for(fold_bn(tiny), t).targets
    oracle = bn_statistics(tiny)
    assert oracle and set(oracle) < set(targets)
    for variant in ("gzsq", "gzsq-local-scale"):
        got = swapped(targets, oracle, variant, t.std_floor)
        assert all(torch.equal(got[k][0], targets[k][0]) and torch.equal(got[k][1], targets[k][1]) for k in targets)
    for variant in ("oracle", "local-scale"):
        got = swapped(targets, oracle, variant, t.std_floor)
        assert all(torch.equal(got[k][0], oracle[k][0]) for k in oracle)


def test_experiment_overrides_parse_literals_and_refuse_junk():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from overrides import parse_overrides

    assert parse_overrides("iterations=100, local=True,lr=0.5,loss='kl'") == (
        ("iterations", 100), ("local", True), ("lr", 0.5), ("loss", "kl"))
    assert parse_overrides("") == ()
    for bad in ("iterations", "=3", "lr=fast"):
        with pytest.raises(SystemExit):
            parse_overrides(bad)
