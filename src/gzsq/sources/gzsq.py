"""GZSQ: calibration images distilled to match statistics estimated from the weights.

The paper's stages 1–2 (`gzsq.targets.weight_targets`) give a (mean, std) per
channel of every Conv2d/Linear output; stage 3 (`gzsq.distillation.loop`) optimizes
images until the folded network's layer outputs show those statistics. The
source reads only the folded weights, so it runs identically in both settings.

Presets: `paper` follows the paper literally (docs/how-it-works.md); `default` is the recipe that
measured best for its time (results/ablation.md says why); `thorough` optimizes
every image for longer; `longer` is the default with twice the steps (results/ablation_levers.md);
`mixed` is the default with half the set left as noise (results/ablation_bnfree.md); `local` the default
with local targets (results/recon_images/), `local-classes` the same with each image pushed towards a class of its
own, `local-long` that for 100 steps; `half-local` half of each;
`half-local-long` the same with the propagated half distilled for 100 steps. `auto`, what the command line and the
API use unless told otherwise, picks one from the architecture and the job (`resolve_preset`).
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from ..config import INT8_JOB, DistillConfig, GzsqRecipe, ImagesFor, TargetConfig
from ..distillation.loop import Objective, distill_images
from ..errors import ConfigError
from ..fold import fold_bn
from ..targets import Stat, is_depthwise, one_step, weight_targets
from .noise import gaussian as gaussian_images
from .registry import Calibration, SourceOptions, input_shape, register_source


# The measured-best targets (results/ablation.md), shared by every preset but `paper`.
_MOMENT_TARGETS = TargetConfig(rule="moments", relu_aware=True, coherence=1.0, std_floor=0.1)

PRESETS: dict[str, GzsqRecipe] = {
    # The paper literally: per-channel SE + ESA(mean+min) in data-flow order, L_Z + input term,
    # ZeroQ's optimizer (Adam lr 0.5, up to 500 iterations; stops once the loss plateaus).
    "paper": GzsqRecipe(
        TargetConfig(rule="paper", per_channel=True, esa="mean+min"),
        DistillConfig(iterations=500, lr=0.5, batch_size=256, loss="z", early_stop_patience=30),
    ),
    # The measured best (results/ablation.md): moment propagation with rectified-Gaussian ReLUs and
    # smooth-image variance, matched with a Gaussian KL (which, unlike L_Z, also pulls on spreads),
    # pixels kept in the valid image range. Fast: 20 Adam steps on a batch covering 256 CIFAR images'
    # worth of pixels (all 256 at 32×32; 16 at 224×224, the rest of the set flips/shifts of them).
    # Optimizing only half of a CIFAR set cost ResNet-32 ~6 pt at W4A4; 20 steps instead of 30 did not.
    "default": GzsqRecipe(
        _MOMENT_TARGETS,
        DistillConfig(iterations=20, lr=0.2, batch_size=256, loss="kl", clamp_pixels=True,
                      distill_pixels=256 * 32 * 32),
    ),
    # Half the pixels: 128 images optimized at 32×32 (Lite0: the same 16), so about half the default's time
    # on CIFAR, but ~6–10 pt lower at W4A4 on ResNet-32/44 (results/accuracy.md, gzsq-fast rows).
    "fast": GzsqRecipe(
        _MOMENT_TARGETS,
        DistillConfig(iterations=20, lr=0.2, batch_size=256, loss="kl", clamp_pixels=True,
                      distill_pixels=128 * 32 * 32),
    ),
    # The default with 40 steps instead of 20, for 224×224 models: the deep layers' statistics move further
    # from their noise start (results/fidelity/). On EfficientNet-Lite0 and MobileNetV2 it raised W6A6
    # agreement by 1.1 and 1.2 pt (3 seeds, results/ablation_levers.md) for about twice the calibration
    # time; at W8A8 +0.6 pt on Lite0, level on MobileNetV2. Not measured on the CIFAR nets.
    "longer": GzsqRecipe(
        _MOMENT_TARGETS,
        DistillConfig(iterations=40, lr=0.2, batch_size=256, loss="kl", clamp_pixels=True,
                      distill_pixels=256 * 32 * 32),
    ),
    # The default with half the set left as N(0, 1) noise (128 of 256 CIFAR images distilled), for BN-free
    # CNNs whose distilled deep ranges come out narrower than real images' (results/fidelity/cifar10-vgg7-nf.md):
    # the ranges are then about the wider of the two sources'. On cifar10-vgg7-nf and cifar10-resnet20-nf it was
    # within 0.1 pt of noise's agreement or above it at W8A8, W6A6 and W4A8 where `default` fell up to 1.4 pt
    # below (3 seeds, results/ablation_bnfree.md); on VGG it gives back 0.4 pt of the default's W4A4 lead. Not the
    # default: as the int8 set (ONNX Runtime, 3 seeds, results/cifar_int8/) it costs ResNet-32 0.36 pt of top-1
    # against local targets, at W6A6 it costs the BN-trained ResNets up to 0.67 (results/ablation_w6a6.md), and
    # at 224x224 W6A6 Lite0 2.6 pt of agreement against the `default` preset (results/ablation_levers.md).
    "mixed": GzsqRecipe(
        _MOMENT_TARGETS,
        DistillConfig(iterations=20, lr=0.2, batch_size=256, loss="kl", clamp_pixels=True,
                      distill_pixels=256 * 32 * 32, noise_fraction=0.5),
    ),
    # The same targets and loss with every image optimized for 30 steps: the earlier default, kept for
    # users who would rather spend more time (results/accuracy.md compares the two).
    "thorough": GzsqRecipe(
        _MOMENT_TARGETS,
        DistillConfig(iterations=30, lr=0.2, batch_size=256, loss="kl", clamp_pixels=True),
    ),
}


# The default with local targets: each layer's target is the rule applied to the statistics the images show at
# its input now, so no layer inherits the errors of the layers before it. Measured (3 seeds): int8 agreement
# +1.3 / +1.7 pt on EfficientNet-Lite0 / -Lite1, −0.2 on -Lite2 (results/lite_int8_levers/); W4A4 block
# reconstruction +3.8 / +4.9 pt on ResNet-32 / -44, −3.4 on ResNet-20 (results/recon_images/). Its deep ranges
# come out wider than real images' on the CIFAR nets, so W4A4 without reconstruction loses badly
# (results/accuracy.md): `auto` uses it on depthwise-separable networks only.
PRESETS["local"] = GzsqRecipe(replace(_MOMENT_TARGETS, local=True), PRESETS["default"].distill)

# `local` with each image pushed towards a random class of its own (cross-entropy on the logits, weight 1), for the
# int8 job on depthwise-separable networks: ONNX Runtime int8, mean agreement over 3 seeds on the 500-image sample
# (results/lite_int8_levers/, rows local_ce1): MobileNetV2 95.67 against `local`'s 94.73 (every seed's top-1 83.0
# or above, FP32 83.4), Lite1 98.40 (97.87), Lite2 96.27 (95.80), Lite0 98.93 (98.93). On the CIFAR nets
# (results/cifar_int8/, rows local+ce1, 3 seeds) the never-normalized ones gain 0.3–1.7 pt but those trained with BN
# lose 0.3–1.3, and folded weights do not say which kind a net is, so `auto` picks it for depthwise-separable
# networks only.
PRESETS["local-classes"] = GzsqRecipe(PRESETS["local"].targets, replace(PRESETS["default"].distill, ce_weight=1.0))

# `local` for learned rounding on depthwise-separable networks, each choice measured on W4A8 block reconstruction
# (ONNX Runtime, the 500-image sample, 3 seeds; results/recon_images/ and results/lowbit/what_limits_reconstruction.md):
# - 100 distillation steps instead of 20: after 20 the 224×224 images' deep features are as collapsed as noise's and
#   the rounding swings with the seed (MobileNetV2 52.7 ± 0.6 against 49.3 ± 6.0).
# - 8 distinct images at 224×224, not 16: the rounding carries over better the fewer distinct distilled images it
#   learns on (64: MobileNetV2 31.6; 8: 54.3). At 32×32 the pixel budget still distills all 256.
# - each image pushed towards a random class of its own (cross-entropy, weight 1): class-specific images spread the
#   deep features over more directions (rows local_it100_d8_ce1: Lite0 58.2 ± 2.1 against 51.7 ± 3.0, MobileNetV2
#   62.5 ± 2.8 against 61.9 ± 2.2; weights 3 and 10 did worse). On ResNet-44 W4A4 it cost `half-local` 5.3 pt.
# - the 56 copies of the 8 images are random crops of them resized back (at least half their area), not flips and
#   ±2-pixel shifts (rows local_it100_d8_ce1_crop0.5: MobileNetV2 67.7 ± 0.7 against 62.5 ± 2.8, Lite0 59.3 ± 0.8
#   against 58.2 ± 2.1; 120 crops on a set of 128 gave MobileNetV2 63.6 at seed 0). At int8 they changed nothing.
# - each step the model sees a random crop of every image (at least half its area, resized back), so the images match
#   their targets at many scales and positions, as the crop copies later show them (rows
#   local_it100_d8_ce1_crop0.5_aug0.5: MobileNetV2 71.7 ± 0.3 against 67.7 ± 0.7, Lite0 64.5 ± 2.1 against
#   59.3 ± 0.8).
# - a total-variation prior at weight 100, which brings neighbouring pixels' differences from 4–5× photos' to 1–2×
#   (rows local_it100_d8_ce1_crop0.5_aug0.5_tv100: MobileNetV2 73.9 ± 0.9 against 71.7 ± 0.3, Lite0 66.6 ± 0.7 against
#   64.5 ± 2.1), and each colour channel shifted to mean 0 afterwards, which removes the strong colour cast of
#   Lite0's images (rows …_tv100_centre: Lite0 68.9 ± 1.5, every seed up again; MobileNetV2 74.1 ± 0.2, level).
# - the prior measured on the [0, 1] pixel scale (weight 440 there: ≈ 100 on MobileNetV2's normalized inputs, ≈ 221 on
#   Lite0's narrower range), so it smooths every model's images alike relative to its range: Lite0 73.1 ± 2.0 at weight
#   222 on its normalized inputs (rows …_tv222_centre), 70.7 ± 1.2 through the command; MobileNetV2, whose weight moved
#   by under 1.5 %, 73.5 ± 0.9 through the command (74.1 ± 0.2 before): the seeds' spread.
#   Twice that weight, 880, lifts Lite0 W4A8 to 73.1 ± 1.2 (every seed up) but costs W6A6 on both models (Lite0
#   83.2 against 84.5, every seed down; MobileNetV2 77.2 against 78.1): a trade between bit widths, not adopted.
# - every step's pixel gradient shaped to a 1/f amplitude spectrum (`grad_spectrum` 1), so the images' spectra fall
#   off nearly as photos' do (slope −1.05 against −1.19; −0.68 without): W4A8 Lite0 74.5 ± 1.3 against 70.7 ± 1.2
#   (every seed up), MobileNetV2 74.3 ± 0.5 against 73.5 ± 0.9 (rows local_long_gs1); W6A6 through the command Lite0
#   85.1 ± 0.6 against 84.5 ± 0.3, MobileNetV2 78.4 ± 1.1 against 78.1 ± 0.1, agreement +1.6 on both
#   (results/lowbit/what_limits_reconstruction.md §17). At int8 it did not help (results/lite_int8_levers/).
# Distillation takes 55–80 s on one thread (70–80 s with the prior, beside one other job), against 5–10 minutes of
# reconstruction.
PRESETS["local-long"] = GzsqRecipe(PRESETS["local"].targets,
                                   replace(PRESETS["default"].distill, iterations=100, min_distill_images=8,
                                           ce_weight=1.0, expand_crop_scale=0.5, augment_crop_scale=0.5,
                                           tv_weight=440.0, tv_on_pixels=True, centre_colour=True,
                                           grad_spectrum=1.0))

# Half the set with local targets, half with the propagated ones, each half optimized as a batch of its own: for
# learned rounding, which fits whatever inputs it sees. The propagated half's deep layers come out narrower than real
# images', the local half's wider (results/fidelity/deep_width_levers.txt); reconstruction on both generalizes better
# than on either. W4A4 block reconstruction (3 seeds, results/recon_images/): ResNet-32 79.56 (default 75.13, local
# 78.89), ResNet-20 77.10 (77.39, 73.95). Its min/max ranges are the local half's wide ones, which round to nearest at
# 4 bits cannot afford: `auto` uses it only when the job reconstructs.
PRESETS["half-local"] = GzsqRecipe(replace(_MOMENT_TARGETS, local=True, local_fraction=0.5),
                                   PRESETS["default"].distill)

# `half-local` with the propagated half distilled for 100 steps instead of 20 (the local half keeps 20). Longer on
# the propagated targets, the images grow smoother (neighbour correlation nearer real images',
# results/fidelity/rank_vs_steps.txt); both halves at 100 steps lift ResNet-20 but lose about a point on ResNet-32
# and -44, the propagated half alone at 100 lifts ResNet-44 too (results/recon_images/). W4A4 block reconstruction,
# 3 seeds (results/lowbit/): ResNet-20 78.36 (half-local 77.25), ResNet-44 78.72 (78.39), but ResNet-32 78.60
# (79.67) and ResNet-20-nf 67.68 (67.96): not what `auto` picks.
PRESETS["half-local-long"] = GzsqRecipe(PRESETS["half-local"].targets,
                                        replace(PRESETS["default"].distill, iterations=100, local_iterations=20))


# `auto`, the default, picks a preset from the architecture and the job: local targets for depthwise-separable
# networks (MobileNet / EfficientNet class), where the propagated targets of depthwise convs fall far below real
# spreads and every later layer inherits that (each image towards a class of its own, `local-classes`; distilled for
# 100 steps, `local-long`, when the job learns its rounding on them), and for every int8 job (8-bit activations, no
# reconstruction): at 8 bits a range too narrow costs far more than one too wide, and the propagated targets' deep
# underestimate grows with depth (ResNet-32-nf int8 through ONNX Runtime: 72.84 with `default`, 76.13 with `local`,
# noise 75.92, FP32 76.20; the shallower nets lose at most 0.6 pt of agreement, 0.1 of top-1: results/cifar_int8/).
# Below 8 bits, `half-local` when the images will train learned rounding (reconstruction), and the `default` preset
# when they only set ranges, where local targets made round-to-nearest W4A4 collapse (results/accuracy.md).
AUTO = "auto"
AUTO_LOCAL = "local"
AUTO_DEPTHWISE = "local-classes"
AUTO_LOCAL_RECONSTRUCT = "local-long"
AUTO_RECONSTRUCT = "half-local"


def is_depthwise_separable(model: torch.nn.Module) -> bool:
    """Whether some conv is depthwise: MobileNet / EfficientNet-class networks."""
    return any(is_depthwise(m) for m in model.modules())


def resolve_preset(preset: str, model: torch.nn.Module, images_for: ImagesFor = INT8_JOB) -> str:
    """The preset `auto` stands for on this model, for images put to this use; any other name is returned as
    it is."""
    if preset != AUTO:
        return preset
    if is_depthwise_separable(model):
        return AUTO_LOCAL_RECONSTRUCT if images_for.reconstructing else AUTO_DEPTHWISE
    if images_for.a_bits >= 8 and not images_for.reconstructing:
        return AUTO_LOCAL
    return AUTO_RECONSTRUCT if images_for.reconstructing else "default"


def recipe_for(preset: str, overrides=()) -> GzsqRecipe:
    if preset not in PRESETS:
        names = ", ".join([AUTO, *PRESETS])
        raise ConfigError(f"unknown gzsq preset {preset!r}; choose one of {names}"
                          + (" (auto is resolved on a model: resolve_preset)" if preset == AUTO else ""))
    recipe = PRESETS[preset]
    t_names = {f.name for f in fields(TargetConfig)}
    d_names = {f.name for f in fields(DistillConfig)}
    t_over, d_over = {}, {}
    for key, value in overrides:
        if key in t_names:
            t_over[key] = value
        elif key in d_names:
            d_over[key] = value
        else:
            raise ConfigError(f"unknown gzsq setting {key!r}")
    return GzsqRecipe(replace(recipe.targets, **t_over), replace(recipe.distill, **d_over))


def _local_rule(t: TargetConfig):
    """One step of the moments rule on measured input statistics, with the same std floor as propagated targets."""
    if t.rule != "moments":
        raise ConfigError("local targets need the moments rule")

    def rule(layer, mean, std):
        s = one_step(layer, Stat(mean, std), t.coherence, t.depthwise_coherence, t.pixel_correlation)
        return s.mean, s.std.clamp_min(t.std_floor * float(s.std.median()) + 1e-8)
    return rule


def _split_local(objective: Objective, distill: DistillConfig, n: int, shape, fraction: float):
    """A set whose first `fraction` is distilled with local targets and the rest with the propagated ones: each
    part optimizes as many images as it would alone (`images_to_optimize`), in batches of their own, the local
    part's first. → the objective and distillation settings that do that in one resumable run."""
    if n < 4:  # two images at least on each side
        return objective, distill
    n_local = min(n - 2, max(2, round(n * fraction)))
    local_opt = distill.images_to_optimize(n_local, shape)
    batch = min(distill.batch_size, local_opt)
    local_batches = -(-local_opt // batch)
    optimized = local_batches * batch + distill.images_to_optimize(n - n_local, shape)
    return (replace(objective, local_batches=local_batches),
            replace(distill, batch_size=batch, distill_images=optimized, distill_pixels=0))


def layer_targets(folded: torch.nn.Module, t: TargetConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each Conv/Linear output's target (mean, std) under `t`, stds floored as distillation uses them."""
    targets = weight_targets(folded, rule=t.rule, per_channel=t.per_channel, esa=t.esa,
                             relu_aware=t.relu_aware, order=t.order, coherence=t.coherence,
                             depthwise_coherence=t.depthwise_coherence, pixel_correlation=t.pixel_correlation)
    return {k: (v.mean, v.std.clamp_min(t.std_floor * float(v.std.median()))) for k, v in targets.layers.items()}


def objective_for(folded: torch.nn.Module, t: TargetConfig) -> Objective:
    """What distillation matches on the folded model: the propagated targets, and the local rule if `t.local`."""
    return Objective(layer_targets(folded, t), local_rule=_local_rule(t) if t.local else None)


@register_source("gzsq")
def gzsq(model, n: int, *, seed: int, options: SourceOptions) -> Calibration:
    folded = fold_bn(model)
    preset = resolve_preset(options.preset, folded)
    recipe = recipe_for(preset, options.overrides)
    t = recipe.targets
    objective = objective_for(folded, t)
    num_classes = list(objective.targets.values())[-1][0].numel()
    n_noise = min(n - 2, round(n * recipe.distill.noise_fraction)) if recipe.distill.noise_fraction else 0
    shape, distill = input_shape(model), recipe.distill
    if t.local and t.local_fraction < 1.0:
        objective, distill = _split_local(objective, distill, n - n_noise, shape, t.local_fraction)
    images, log = distill_images(folded, objective, n - n_noise, shape, distill, seed=seed,
                                 pixel_bounds=model.input_spec.pixel_bounds(), num_classes=num_classes,
                                 progress=options.progress, desc=f"gzsq[{preset}]",
                                 checkpoint=options.checkpoint)
    if n_noise:  # the last n_noise rows of the gaussian source's draw, left as they are
        images = torch.cat([images, gaussian_images(model, n, seed=seed, options=options).images[n - n_noise:]])
    log["noise_images"] = n_noise
    log["preset"] = preset
    log["recipe"] = {"targets": t.__dict__, "distill": recipe.distill.__dict__}
    return Calibration(images, "gzsq", seed, 0.0, log)
