"""Which distillation recipe makes the best calibration images for low-bit block reconstruction?

For each (model, recipe, seed) the gzsq source distills the 256-image set (64 images for the 224×224 models,
evaluated on the 500-image ImageNet sample instead of the CIFAR-10 test set) from the BN-folded weights alone
(setting bn-free; the recipe is the `default` preset with the overrides listed in RECIPES, applied by
`gzsq.sources.gzsq.recipe_for`), on one thread, timed; the set is written as `gzsq distill` writes it
(`gzsq.sources.saved.save_calibration`), then the real command line quantizes with it in a subprocess:

    python -m gzsq.cli quantize MODEL --weights W --w-bits 4 --a-bits 4 --calib-set SET.npz \\
        --eval-data ../shared/data/cifar10/test.npz --threads 1 --seed S -o OUT.onnx --json

With --calib-set the reconstruction's batches are drawn with the set's own seed (the one it was distilled
with; pipeline.py replaces the job's seed by it), so S is used for both and --seed is passed only for
clarity. Each run appends one row to results/recon_images/runs.csv (the report .json/.md of each run is
kept in results/recon_images/<run>/) and README.md's table is rewritten from the CSV.

    python experiments/recon_images.py --models cifar10-resnet32 --recipes default it60 --seeds 0
    python experiments/recon_images.py --models cifar10-resnet20 --recipes it150_b64 --seeds 0 1 2 --bits 4,4
    python experiments/recon_images.py --table

--code COMMIT runs gzsq's src/ as committed at COMMIT (git archive into a temp dir, first on sys.path and on the
subprocess's PYTHONPATH), so that edits others make to src/ during a sweep do not change its runs; each run's
folder records the code it ran in commit.txt.

A run already in runs.csv is skipped.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from lowbit_quantize import EVAL as EVAL_SETS  # noqa: E402
from lowbit_imagenet import WEIGHTS as IMAGENET_WEIGHTS  # noqa: E402
from lowbit_quantize import WEIGHTS, append_row, grouped_rows, run_quantize  # noqa: E402

OUT = ROOT / "results" / "recon_images"
CSV = OUT / "runs.csv"
WEIGHTS = {**WEIGHTS, **IMAGENET_WEIGHTS}


def is_imagenet(model_name: str) -> bool:
    return model_name.startswith(("efficientnet", "mobilenet"))


def eval_data(model_name: str) -> Path:
    """All 10 000 CIFAR-10 test images, or the 500-image ImageNet sample for the 224×224 models."""
    return EVAL_SETS["imagenet" if is_imagenet(model_name) else "cifar10"]


def quantize_command(model: str, w: int, a: int, calib_set: Path, seed: int, out: Path) -> list[str]:
    """The command line that quantizes `model` with a saved calibration set and evaluates it, one thread."""
    weights = ["--weights", str(WEIGHTS[model])] if model in WEIGHTS else []
    return ["gzsq", "quantize", model, *weights, "--w-bits", str(w), "--a-bits", str(a), "--calib-set", str(calib_set),
            "--eval-data", str(eval_data(model)), "--threads", "1", "--seed", str(seed), "-o", str(out), "--json"]

# name → overrides of the `default` preset (iterations 20, lr 0.2, batch 256, KL, clamped pixels)
_LOCAL_LONG = (("local", True), ("iterations", 100), ("min_distill_images", 8), ("ce_weight", 1.0),
               ("expand_crop_scale", 0.5), ("augment_crop_scale", 0.5), ("tv_weight", 440.0), ("tv_on_pixels", True),
               ("centre_colour", True))
RECIPES: dict[str, tuple[tuple[str, object], ...]] = {
    "default": (),
    "it5": (("iterations", 5),),
    "it10": (("iterations", 10),),
    "it15": (("iterations", 15),),
    "it10_ce1": (("iterations", 10), ("ce_weight", 1.0)),
    "it15_ce1": (("iterations", 15), ("ce_weight", 1.0)),
    "it30": (("iterations", 30),),
    "it60": (("iterations", 60),),
    "it150": (("iterations", 150),),
    "it300": (("iterations", 300),),
    "b64": (("batch_size", 64),),
    "b32": (("batch_size", 32),),
    "ce0.1": (("ce_weight", 0.1),),
    "ce1": (("ce_weight", 1.0),),
    "ce3": (("ce_weight", 3.0),),
    "ce10": (("ce_weight", 10.0),),
    "it40_ce3": (("iterations", 40), ("ce_weight", 3.0)),
    "b64_ce1": (("batch_size", 64), ("ce_weight", 1.0)),
    "tv0.05": (("tv_weight", 0.05),),
    "lr0.1": (("lr", 0.1),),
    "noise0.5": (("noise_fraction", 0.5),),
    "it60_b64": (("iterations", 60), ("batch_size", 64)),
    "it60_b32": (("iterations", 60), ("batch_size", 32)),
    "it150_b64": (("iterations", 150), ("batch_size", 64)),
    "it150_b32": (("iterations", 150), ("batch_size", 32)),
    "it60_ce0.1": (("iterations", 60), ("ce_weight", 0.1)),
    "it60_ce1": (("iterations", 60), ("ce_weight", 1.0)),
    "it150_ce0.1": (("iterations", 150), ("ce_weight", 0.1)),
    "it150_ce1": (("iterations", 150), ("ce_weight", 1.0)),
    "it60_b64_ce0.1": (("iterations", 60), ("batch_size", 64), ("ce_weight", 0.1)),
    "it60_b64_ce1": (("iterations", 60), ("batch_size", 64), ("ce_weight", 1.0)),
    "it150_b64_ce0.1": (("iterations", 150), ("batch_size", 64), ("ce_weight", 0.1)),
    "it150_b64_ce1": (("iterations", 150), ("batch_size", 64), ("ce_weight", 1.0)),
    "it60_tv0.01": (("iterations", 60), ("tv_weight", 0.01)),
    "it60_lr0.05": (("iterations", 60), ("lr", 0.05)),
    # start from noise with natural images' 1/f spectrum and colour correlation instead of white noise
    "natural": (("init_spectrum", 1.0), ("init_colour", 0.85)),
    "it10_natural": (("iterations", 10), ("init_spectrum", 1.0), ("init_colour", 0.85)),
    "colour": (("init_colour", 0.85),),
    # each layer's target from the batch's current input statistics (one step of the rule), not propagated
    "local": (("local", True),),
    "local_it40": (("local", True), ("iterations", 40)),
    # at 224×224 the default's 20 steps leave the images' deep features as collapsed as noise's
    # (results/fidelity/input_correlations.txt): do five times the steps make better reconstruction data there?
    "local_it100": (("local", True), ("iterations", 100)),
    # `local-long` with every one of the 64 images distilled instead of 16 (the rest flips/shifts of them): is the
    # learned rounding overfitting 16 distinct images?
    "local_it100_all": (("local", True), ("iterations", 100), ("distill_pixels", 0)),
    # all 64 distilled as four batches of 16 (the statistics of 16 images matched at a time, as `local-long` does),
    # and only 8 distilled (56 flips/shifts of them): distinct images, or the batch the statistics are taken over?
    "local_it100_b16": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("batch_size", 16)),
    "local_it100_d8": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8)),
    # fewer still: 64 distinct → 31.6, 16 → 52.7, 8 → 54.3 on MobileNetV2 (lr 1e-3); does the trend go on?
    "local_it100_d4": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 4)),
    # the same loss image by image as well as over the batch (DistillConfig.per_image_weight): do 64 distinct
    # distilled images collapse because a few images carry a channel for the rest?
    "local_it100_all_pi1": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("per_image_weight", 1.0)),
    "local_it100_d8_pi1": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                           ("per_image_weight", 1.0)),
    "half_local_pi1": (("local", True), ("local_fraction", 0.5), ("per_image_weight", 1.0)),
    # `local-long` (8 distilled) on half the set, the other half Gaussian noise: at 224×224 noise alone is as good
    # reconstruction data as the distilled images; do the two excite directions the other leaves free?
    "local_it100_d8_noise0.5": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                                ("noise_fraction", 0.5)),
    # `local-long` (8 distilled) with cross-entropy towards a random class per image: at 224×224 the distilled
    # images' deep features span a fifth of real images' directions; do class-specific images excite more of them?
    "local_it100_d8_ce1": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                           ("ce_weight", 1.0)),
    "local_it100_d8_ce10": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                            ("ce_weight", 10.0)),
    "local_it100_d8_ce3": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                           ("ce_weight", 3.0)),
    # the class term with fewer and with more distinct images: without it 4 and 8 were level on MobileNetV2 (63.2 and
    # 62.8 at seed 0, lr 1e-2); with it each distinct image holds a class of its own: do more of them add directions?
    "local_it100_d4_ce1": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 4),
                           ("ce_weight", 1.0)),
    "local_it100_d16_ce1": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 16),
                            ("ce_weight", 1.0)),
    # `local-long`'s 56 copies of its 8 distilled images made as flipped random crops resized back
    # (DistillConfig.expand_crop_scale: the smallest area share a crop keeps) instead of flips and ±2-pixel shifts
    "local_it100_d8_ce1_crop0.5": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                                   ("ce_weight", 1.0), ("expand_crop_scale", 0.5)),
    "local_it100_d8_ce1_crop0.25": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                    ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.25)),
    # the images distilled through random crops of themselves each step (DistillConfig.augment_crop_scale): they
    # match their targets at many scales and positions, as their crop copies then show them to the rounding
    "local_it100_d8_ce1_crop0.5_aug0.5": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                          ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.5),
                                          ("augment_crop_scale", 0.5)),
    # the same with stronger crops each step, with twice the steps, and with 16 distinct images
    "local_it100_d8_ce1_crop0.5_aug0.25": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                           ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.5),
                                           ("augment_crop_scale", 0.25)),
    "local_it200_d8_ce1_crop0.5_aug0.5": (("local", True), ("iterations", 200), ("distill_pixels", 0),
                                          ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.5),
                                          ("augment_crop_scale", 0.5)),
    "local_it100_d16_ce1_crop0.5_aug0.5": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                           ("distill_images", 16), ("ce_weight", 1.0), ("expand_crop_scale", 0.5),
                                           ("augment_crop_scale", 0.5)),
    # the same with a total-variation prior on the pixels (DistillConfig.tv_weight): the distilled images' neighbouring
    # pixels differ 4–5× more than real images' (mean |difference| over the pixel std); at weight 100 they differ as
    # much as real images', at 30 in between
    "local_it100_d8_ce1_crop0.5_aug0.5_tv30": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                               ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.5),
                                               ("augment_crop_scale", 0.5), ("tv_weight", 30.0)),
    "local_it100_d8_ce1_crop0.5_aug0.5_tv100": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                                ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.5),
                                                ("augment_crop_scale", 0.5), ("tv_weight", 100.0)),
    # the same with each colour channel of the distilled images shifted to mean 0 (DistillConfig.centre_colour):
    # Lite0's come out with a strong colour cast; and with the total-variation prior as well
    "local_it100_d8_ce1_crop0.5_aug0.5_centre": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                                 ("distill_images", 8), ("ce_weight", 1.0),
                                                 ("expand_crop_scale", 0.5), ("augment_crop_scale", 0.5),
                                                 ("centre_colour", True)),
    "local_it100_d8_ce1_crop0.5_aug0.5_tv100_centre": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                                       ("distill_images", 8), ("ce_weight", 1.0),
                                                       ("expand_crop_scale", 0.5), ("augment_crop_scale", 0.5),
                                                       ("tv_weight", 100.0), ("centre_colour", True)),
    # the same with each channel's contrast set to photographs' (DistillConfig.channel_std_share: std 0.23 of the
    # pixel range): with the prior the images come out flatter than real ones
    "local_it100_d8_ce1_crop0.5_aug0.5_tv100_centre_std0.23": (
        ("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8), ("ce_weight", 1.0),
        ("expand_crop_scale", 0.5), ("augment_crop_scale", 0.5), ("tv_weight", 100.0), ("centre_colour", True),
        ("channel_std_share", 0.23)),
    # the prior at the same weight per unit of pixel range as MobileNetV2's 100 (its range is 4.42 wide, Lite0's
    # 1.99): at weight 100 both models' images end at the same absolute roughness, which is 0.6× real photos' on
    # MobileNetV2's scale and 1.4× on Lite0's (results/fidelity/image_smoothness.txt)
    "local_it100_d8_ce1_crop0.5_aug0.5_tv222_centre": (
        ("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8), ("ce_weight", 1.0),
        ("expand_crop_scale", 0.5), ("augment_crop_scale", 0.5), ("tv_weight", 222.0), ("centre_colour", True)),
    "local_it100_d8_ce1_crop0.5_aug0.5_tv222_centre_std0.23": (
        ("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8), ("ce_weight", 1.0),
        ("expand_crop_scale", 0.5), ("augment_crop_scale", 0.5), ("tv_weight", 222.0), ("centre_colour", True),
        ("channel_std_share", 0.23)),
    # `local-long` as the command distils it, and the same with 16 or 32 distinct images in batches of 8: each batch
    # matches its targets on its own statistics, as the 8 do, so more images need not mean looser ones
    "local_long": _LOCAL_LONG,
    "local_long_d16b8": _LOCAL_LONG + (("distill_pixels", 0), ("distill_images", 16), ("batch_size", 8)),
    "local_long_d32b8": _LOCAL_LONG + (("distill_pixels", 0), ("distill_images", 32), ("batch_size", 8)),
    # `local-long` with half its distillation steps (200 steps gave MobileNetV2 4.4 pt less than 100), and with its
    # smoothness prior at twice the weight
    "local_long_it50": tuple((k, 50 if k == "iterations" else v) for k, v in _LOCAL_LONG),
    "local_long_tv880": tuple((k, 880.0 if k == "tv_weight" else v) for k, v in _LOCAL_LONG),
    # local-long with half of its crop copies mixed: a box from another copy pasted in (CutMix; DistillConfig.expand_mix,
    # removed after commit e6662b8: run it with --code e6662b8)
    "local_long_mix0.5": _LOCAL_LONG + (("expand_mix", 0.5),),
    # local-long started from 1/f noise with photos' colour correlation instead of white noise
    "local_long_natural": _LOCAL_LONG + (("init_spectrum", 1.0), ("init_colour", 0.85)),
    # every step's pixel gradient filtered to a 1/f^α amplitude spectrum (DistillConfig.grad_spectrum)
    "local_long_gs1": _LOCAL_LONG + (("grad_spectrum", 1.0),),
    # the optimized images start from dead-leaves pictures (`DistillConfig.init_leaves`, removed after measurement:
    # run these three with --code cdbebf4); `_it1`: one step at a negligible rate, so the set is the pictures
    # themselves with the recipe's crops and colour centring
    "local_long_gs1_leaves": _LOCAL_LONG + (("grad_spectrum", 1.0), ("init_leaves", True)),
    "local_long_gs1_leaves_it1": tuple((k, 1 if k == "iterations" else v) for k, v in _LOCAL_LONG)
    + (("grad_spectrum", 1.0), ("init_leaves", True), ("lr", 1e-6)),
    # and every step's colour channels moved together, as photos' vary (`DistillConfig.grad_colour`, removed after
    # measurement: run these two with --code e1c2b72)
    "local_long_gs1_gc0.85": _LOCAL_LONG + (("grad_spectrum", 1.0), ("grad_colour", 0.85)),
    "local_long_gs1_gc0.95": _LOCAL_LONG + (("grad_spectrum", 1.0), ("grad_colour", 0.95)),
    # the same with the colour channels' contrast evened out over their pixel ranges (DistillConfig.balance_colour,
    # removed after commit adcf0b5: run it with --code adcf0b5)
    "local_long_gs1_balance": _LOCAL_LONG + (("grad_spectrum", 1.0), ("balance_colour", True)),
    # the same with the smoothness prior at a quarter of its weight: with the shaped steps the images come out smoother
    # than photos (total variation over the channels' std 0.18 at 440, 0.38 at 110 on MobileNetV2, photos 0.40;
    # results/fidelity/image_smoothness.txt)
    "local_long_gs1_tv110": tuple((k, 110.0 if k == "tv_weight" else v) for k, v in _LOCAL_LONG)
    + (("grad_spectrum", 1.0),),
    # the same (`local-long` as the command distils it) with half of each image's class target on a second class
    # (DistillConfig.ce_second_weight, removed after commit 42dcac6: run it with --code 42dcac6): images on the
    # boundary between two classes rather than deep inside one
    "local_long_gs1_two_class0.5": _LOCAL_LONG + (("grad_spectrum", 1.0), ("ce_second_weight", 0.5)),
    # the same with a reward for images that differ from one another (DistillConfig.image_spread_weight, removed
    # after measurement: run it with --code 3094171)
    "local_long_gs1_spread0.1": _LOCAL_LONG + (("grad_spectrum", 1.0), ("image_spread_weight", 0.1)),
    # the same with every distillation step's crops also turned by up to ±10° (DistillConfig.augment_rotation), or
    # with their colour channels scaled and shifted at random (DistillConfig.augment_colour 0.5); both removed after
    # measurement: run these two with --code e96b616
    "local_long_gs1_rot10": _LOCAL_LONG + (("grad_spectrum", 1.0), ("augment_rotation", 10.0)),
    "local_long_gs1_colour0.5": _LOCAL_LONG + (("grad_spectrum", 1.0), ("augment_colour", 0.5)),
    # `local-long` with the images made by a small random conv decoder from a latent map each, the decoder's weights
    # frozen and only the latents optimized (DistillConfig.generator, generator_latent_lr; removed after commit
    # 99714de: run it with --code 99714de)
    "local_long_decoder_latents": _LOCAL_LONG + (("generator", True), ("generator_lr", 0.0),
                                                 ("generator_latent_lr", 0.2)),
    # the same on a set of 128 (8 distilled, 120 crops): do more copies add variety the rounding can use?
    "local_it100_d8_ce1_crop0.5_n128": (("local", True), ("iterations", 100), ("distill_pixels", 0),
                                        ("distill_images", 8), ("ce_weight", 1.0), ("expand_crop_scale", 0.5)),
    "local_natural": (("local", True), ("init_spectrum", 1.0), ("init_colour", 0.85)),
    # half the set distilled with local targets, half with the propagated ones (each half from its own start)
    "half_local": (("local", True), ("local_fraction", 0.5)),
    "half_local_leaves": (("local", True), ("local_fraction", 0.5), ("init_leaves", True)),  # --code cdbebf4
    # the same with a reward for images that differ from one another along many directions of each target layer's
    # per-image channel means (DistillConfig.image_spread_weight, below 0 pulling them together; removed after
    # measurement: run these three with --code 3094171; results/fidelity/between_image_share.txt)
    "half_local_spread0.1": (("local", True), ("local_fraction", 0.5), ("image_spread_weight", 0.1)),
    "half_local_spread1": (("local", True), ("local_fraction", 0.5), ("image_spread_weight", 1.0)),
    "half_local_alike0.1": (("local", True), ("local_fraction", 0.5), ("image_spread_weight", -0.1)),
    # the same with the total-variation prior (at 32×32, weight 1 brings neighbouring pixels' differences over the
    # channel std from 2.1 to 1.1, real images 0.4, but the channels' std from 1.0 to 0.7:
    # results/fidelity/image_smoothness_cifar.txt), and with the contrast set back to photographs' (0.25 of the range)
    "half_local_tv1": (("local", True), ("local_fraction", 0.5), ("tv_weight", 1.0)),
    "half_local_tv1_std0.25": (("local", True), ("local_fraction", 0.5), ("tv_weight", 1.0),
                               ("channel_std_share", 0.25)),
    # a quarter / three quarters of the set distilled with local targets, the rest with the propagated ones
    "quarter_local": (("local", True), ("local_fraction", 0.25)),
    "three_quarters_local": (("local", True), ("local_fraction", 0.75)),
    # half-local with five times the steps: local targets' deep features grow richer with more steps
    "half_local_it100": (("local", True), ("local_fraction", 0.5), ("iterations", 100)),
    # a term keeping each target layer's channels from moving together (DistillConfig.decorrelation_weight)
    "local_decor1000": (("local", True), ("decorrelation_weight", 1000.0)),
    # the same on `local-long`'s 8 distilled images: the deep units are where gzsq's images lose the 224×224
    # reconstruction (results/lowbit/recon_split_224.md), and their inputs' channels are the most collapsed
    "local_it100_d8_decor100": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                                ("decorrelation_weight", 100.0)),
    "local_it100_d8_decor1000": (("local", True), ("iterations", 100), ("distill_pixels", 0), ("distill_images", 8),
                                 ("decorrelation_weight", 1000.0)),
    "half_local_decor1000": (("local", True), ("local_fraction", 0.5), ("decorrelation_weight", 1000.0)),
    # 1024 images, every one distilled (the default's pixel budget raised fourfold)
    "distinct1024": (("distill_pixels", 1024 * 32 * 32),),
    # half-local with the propagated half distilled for 100 steps, the local half for 20 (one run)
    "half_local_prop100": (("local", True), ("local_fraction", 0.5), ("iterations", 100), ("local_iterations", 20)),
    # half-local with the class term `local-long` uses at 224×224 (cross-entropy towards a random class per image)
    "half_local_ce1": (("local", True), ("local_fraction", 0.5), ("ce_weight", 1.0)),
    # half-local distilled through random crops of its images each step (DistillConfig.augment_crop_scale), which
    # lifted the 224×224 local-long images as reconstruction data
    "half_local_aug0.5": (("local", True), ("local_fraction", 0.5), ("augment_crop_scale", 0.5)),
    # half-local with every step's pixel gradient shaped to a 1/f amplitude spectrum (DistillConfig.grad_spectrum)
    "half_local_gs1": (("local", True), ("local_fraction", 0.5), ("grad_spectrum", 1.0)),
    "half_local_aug0.75": (("local", True), ("local_fraction", 0.5), ("augment_crop_scale", 0.75)),
    # half-local on a larger set, every image distilled (each half's pixel budget covers it): do more distinct
    # images make the learned rounding generalize better?
    "half_local_n512": (("local", True), ("local_fraction", 0.5), ("distill_pixels", 512 * 32 * 32)),
    "half_local_n1024": (("local", True), ("local_fraction", 0.5), ("distill_pixels", 1024 * 32 * 32)),
    # half-local on 1024 images of which 256 per half are distilled, the rest flips/shifts of them
    "half_local_n1024_aug": (("local", True), ("local_fraction", 0.5)),
    # half-local's own 256 distilled images (128 per half, the default's batches) plus as many copies of them:
    # flips and ±2-pixel shifts, or random crops of at least half the area resized back. Copies
    # lifted learned rounding at 224×224 (results/lowbit/what_limits_reconstruction.md §9); at 32×32 every image
    # was distilled and the rounding saw each pattern at one position only.
    "half_local_n512_aug": (("local", True), ("local_fraction", 0.5), ("distill_pixels", 128 * 32 * 32)),
    "half_local_n512_crop0.5": (("local", True), ("local_fraction", 0.5), ("distill_pixels", 128 * 32 * 32),
                                ("expand_crop_scale", 0.5)),
    # half-local's 256 images with fewer of them distilled: 64 per half, the rest flips and ±2-pixel shifts
    # of them. At 224×224 fewer distinct images taught learned rounding better (8 of 64 over 16 or 64:
    # results/lowbit/what_limits_reconstruction.md §5), and at 32×32 512 distinct images did worse on ResNet-44 than
    # 256 (77.61 against the command's 79.76 at seed 0).
    "half_local_d64": (("local", True), ("local_fraction", 0.5), ("distill_pixels", 64 * 32 * 32)),
}
# Sets made of parts distilled separately (part k with seed 10·S + k) and concatenated: name → (share of the set,
# overrides of `default`) per part. Which half of `half-local` wants more steps, the local or the propagated one?
PARTS: dict[str, tuple[tuple[float, tuple[tuple[str, object], ...]], ...]] = {
    "half_local_parts": ((0.5, (("local", True),)), (0.5, ())),  # `half_local` rebuilt from two runs: the control
    "local_it100_prop_it20": ((0.5, (("local", True), ("iterations", 100))), (0.5, ())),
    "local_it20_prop_it100": ((0.5, (("local", True),)), (0.5, (("iterations", 100),))),
    # thirds: local targets 20 steps, propagated 20 steps, propagated 100 steps (the two half-local recipes' parts)
    "thirds_local_prop20_prop100": ((1 / 3, (("local", True),)), (1 / 3, ()), (1 / 3, (("iterations", 100),))),
}
RECIPES.update({name: () for name in PARTS})  # made from PARTS; listed so --recipes accepts them
# recipes that change the set's size: name → images (default: 256, 64 at 224×224)
N_IMAGES = {"distinct1024": 1024, "half_local_n512": 512, "half_local_n1024": 1024, "half_local_n1024_aug": 1024,
            "half_local_n512_aug": 512, "half_local_n512_crop0.5": 512,
            "local_it100_d8_ce1_crop0.5_n128": 128}

FIELDS = ["model", "w_bits", "a_bits", "first_last_8bit", "recipe", "overrides", "seed", "distill_seconds",
          "distill_final_loss", "fp32_top1", "onnxruntime_top1", "simulator_top1", "agreement",
          "seconds_reconstruct", "seconds_total", "command"]


def describe(recipe: str) -> str:
    """The recipe's overrides of `default` as the table shows them; for a set made of parts, each part's."""
    if recipe in PARTS:
        return " + ".join(f"{share:.2g}: " + (" ".join(f"{k}={v}" for k, v in over) or "-")
                          for share, over in PARTS[recipe])
    return " ".join(f"{k}={v}" for k, v in RECIPES[recipe]) or "-"


def run_name(model, w, a, fl8, recipe, seed) -> str:
    return f"{model}_w{w}a{a}{'_fl8' if fl8 else ''}_{recipe}_s{seed}"


def done_runs() -> set[str]:
    if not CSV.exists():
        return set()
    with CSV.open() as f:
        return {run_name(r["model"], r["w_bits"], r["a_bits"], r["first_last_8bit"] == "True", r["recipe"], r["seed"])
                for r in csv.DictReader(f)}


def pin_code(commit: str) -> str:
    """Run gzsq as it was at `commit` (src/ extracted with git archive), in this process and in the quantize
    subprocess: others commit to src/ while sweeps run. → the full commit id."""
    import os

    full = subprocess.run(["git", "rev-parse", commit], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip()
    dest = Path(tempfile.gettempdir()) / f"gzsq_src_{full[:12]}"
    if not (dest / "src" / "gzsq").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", full, "src"], capture_output=True, cwd=ROOT, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    sys.path.insert(0, str(dest / "src"))
    os.environ["PYTHONPATH"] = str(dest / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    return full


CODE = {"commit": None}


def distill_set(model_name: str, recipe: str, seed: int, path: Path, device: str = "cpu",
                weights: Path | None = None) -> tuple[float, float]:
    """Distill the calibration set (256 images, 64 at 224×224; bn-free, `default` + the recipe's overrides) on
    `device` and save it; → (seconds, last loss)."""
    from gzsq.device import use

    with use(device):
        return _distill_set(model_name, recipe, seed, path, weights)


def _distill_set(model_name: str, recipe: str, seed: int, path: Path, weights: Path | None) -> tuple[float, float]:
    import torch

    import gzsq
    from gzsq.config import CalibrationConfig
    from gzsq.models.validate import model_name as name_of
    from gzsq.sources.calibrate import calibrate
    from gzsq.sources.saved import save_calibration

    torch.set_num_threads(1)
    weights = weights or WEIGHTS.get(model_name)  # None: a zoo model whose weights ship with gzsq (cifar10-resnet20-nf)
    model = gzsq.load_model(model_name, str(weights)) if weights else gzsq.load_model(model_name)
    config = CalibrationConfig(source="gzsq", seed=seed, preset="default", setting="bn-free",
                               n_images=N_IMAGES.get(recipe, 64 if is_imagenet(model_name) else 256))
    t = time.perf_counter()
    if recipe in PARTS:
        import dataclasses

        pieces, left = [], config.n_images
        for k, (share, overrides) in enumerate(PARTS[recipe]):
            n = left if k == len(PARTS[recipe]) - 1 else round(config.n_images * share)
            left -= n
            part = dataclasses.replace(config, n_images=n, seed=10 * seed + k)
            pieces.append(calibrate(model, part, overrides=overrides))
        calib = dataclasses.replace(pieces[0], images=torch.cat([c.images for c in pieces]), seed=seed,
                                    log={"final_loss": [x for c in pieces for x in c.log.get("final_loss", [])]})
    else:
        calib = calibrate(model, config, overrides=RECIPES[recipe])
    seconds = time.perf_counter() - t
    save_calibration(path, calib, {"model": name_of(model), "setting": "bn-free", "preset": "default",
                                   "recipe": recipe,
                                   "overrides": describe(recipe) if recipe in PARTS else [list(o) for o in RECIPES[recipe]]})
    losses = calib.log.get("final_loss") or []
    last = float(sum(losses) / len(losses)) if losses else float("nan")
    return seconds, last


def run(model, w, a, fl8, recipe, seed) -> dict:
    name = run_name(model, w, a, fl8, recipe, seed)
    # the code the run used: others commit to src/ while sweeps run
    if CODE["commit"]:
        head, dirty = CODE["commit"][:7] + " (--code)", ""
    else:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT).stdout
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        calib_set = work / f"{name}.npz"
        distill_seconds, loss = distill_set(model, recipe, seed, calib_set)
        out = work / f"{name}.onnx"
        cmd = quantize_command(model, w, a, calib_set, seed, out)
        if fl8:
            cmd.append("--first-last-8bit")
        report, seconds, shown = run_quantize(cmd, name, work, OUT / name, (".report.json", ".report.md"))
    shown = shown.replace(str(calib_set), "SET.npz")
    (OUT / name / "commit.txt").write_text(f"{head.strip()}{' (src/ modified)' if dirty.strip() else ''}\n")
    e = report["evaluation"]
    return {"model": model, "w_bits": w, "a_bits": a, "first_last_8bit": fl8, "recipe": recipe,
            "overrides": describe(recipe), "seed": seed,
            "distill_seconds": round(distill_seconds, 1), "distill_final_loss": round(loss, 4),
            "fp32_top1": e["fp32_top1"], "onnxruntime_top1": e["int8_top1"], "simulator_top1": e["simulator_top1"],
            "agreement": e["agreement"], "seconds_reconstruct": report["seconds"].get("reconstruct", 0.0),
            "seconds_total": round(seconds, 1), "command": shown}


def write_table() -> None:
    if not CSV.exists():
        return
    groups = grouped_rows(CSV, ("model", "w_bits", "a_bits", "first_last_8bit", "recipe"))

    def stat(rs, key):
        vals = [float(r[key]) for r in rs]
        mean = sum(vals) / len(vals)
        if len(vals) == 1:
            return f"{mean:.2f}"
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        return f"{mean:.2f} ± {std:.2f}"

    lines = ["| model | W/A | first/last 8-bit | recipe | overrides of `default` | ONNX Runtime top-1 | per seed | "
             "agreement | seeds | distill s | total s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (model, w, a, fl8, recipe), rs in sorted(groups.items(), key=lambda kv: (kv[0][:4], kv[0][4] != "default")):
        rs = sorted(rs, key=lambda r: int(r["seed"]))  # rows in seed order, whatever order the runs ended in
        lines.append(f"| {model} | W{w}A{a} | {'yes' if fl8 == 'True' else 'no'} | {recipe} | {describe(recipe) if recipe in PARTS else rs[0]['overrides']} | "
                     f"{stat(rs, 'onnxruntime_top1')} | {' / '.join(r['onnxruntime_top1'] for r in rs)} | "
                     f"{stat(rs, 'agreement')} | {','.join(r['seed'] for r in rs)} | {stat(rs, 'distill_seconds')} | "
                     f"{stat(rs, 'seconds_total')} |")
    table = "\n".join(lines) + "\n"
    readme = OUT / "README.md"
    begin, end = "<!-- table begin -->", "<!-- table end -->"
    text = readme.read_text() if readme.exists() else f"# Distillation recipes for reconstruction\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{begin}\n{table}{end}{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="cifar10-resnet32")
    p.add_argument("--recipes", nargs="+", default=["default"], choices=sorted(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--bits", default="4,4", help="W,A")
    p.add_argument("--first-last-8bit", action="store_true")
    p.add_argument("--table", action="store_true", help="only rewrite README.md's table from runs.csv")
    p.add_argument("--code", metavar="COMMIT", help="run gzsq's src/ as committed at COMMIT (extracted to a temp dir)")
    args = p.parse_args()
    if args.code:
        CODE["commit"] = pin_code(args.code)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.table:
        write_table()
        return
    w, a = map(int, args.bits.split(","))
    done = done_runs()
    for model in args.models.split(","):
        for seed in args.seeds:
            for recipe in args.recipes:
                name = run_name(model, w, a, args.first_last_8bit, recipe, seed)
                if name in done:
                    continue
                row = run(model, w, a, args.first_last_8bit, recipe, seed)
                append_row(CSV, FIELDS, row)
                write_table()
                print(f"{name}: ORT {row['onnxruntime_top1']} agreement {row['agreement']} distill "
                      f"{row['distill_seconds']} s total {row['seconds_total']} s", flush=True)


if __name__ == "__main__":
    main()
