"""Every setting of a gzsq job, as small frozen dataclasses: built once, validated here, passed down whole.

A job is a few of these composed: `QuantizeJob` = where calibration images come
from (`CalibrationConfig`) + how ONNX Runtime quantizes (`Int8ExportConfig`) +
what to evaluate on (`EvaluationConfig`); `gzsq evaluate` pairs a
`CalibrationConfig` with a `QuantConfig` (the simulated scheme). Variants are
made with `dataclasses.replace`. This module imports nothing heavy, so the CLI can
validate a command line before torch loads.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace

from .errors import ConfigError

MIN_BITS, MAX_BITS = 2, 8
OBSERVERS = ("minmax", "percentile", "mse")  # activation range rules (gzsq.quantization.observers)
SETTINGS = ("bn", "bn-free")
LOSS_NAMES = ("z", "l2", "kl")  # distillation losses (gzsq.distillation.losses)
RECONSTRUCT_METHODS = ("block", "adaround")  # gzsq.reconstruct
RECONSTRUCT_LOSSES = ("mse", "channel-normalized", "residual-normalized")  # gzsq.reconstruct._reconstruction_error
# More calibration images than this is a typo, not a plan: ranges settle after a few hundred, and
# 100 000 ImageNet-size images would need ~60 GB of memory.
MAX_CALIBRATION_IMAGES = 100_000
MAX_SEED = 2**32 - 1  # what every RNG gzsq seeds (torch, numpy) accepts


def check_bits(bits: int, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def check_n_calib(n) -> int:
    """The number of calibration images: an integer from 1 to MAX_CALIBRATION_IMAGES."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"number of calibration images must be a positive integer, got {n!r}")
    if n > MAX_CALIBRATION_IMAGES:
        raise ConfigError(f"{n} calibration images is too many (at most {MAX_CALIBRATION_IMAGES:,}; "
                          "256 is the usual choice)")
    return int(n)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def calib_label(source: str, preset: str) -> str:
    """How tables name a calibration source: gzsq-<preset> for gzsq, the source's name otherwise."""
    return f"gzsq-{preset}" if source == "gzsq" and preset else source


def default_n_calib(model) -> int:
    """256 calibration images, 64 for ImageNet-size inputs (≥ 128 px): what every measurement used."""
    return 64 if model.input_spec.size >= 128 else 256


def default_setting(model) -> str:
    """`bn` when the model has BatchNorm layers (their statistics may be read), else `bn-free`."""
    from .fold import has_batchnorm

    return "bn" if has_batchnorm(model) else "bn-free"


@dataclass(frozen=True)
class ImagesFor:
    """What a calibration set will serve: ranges for `a_bits`-bit activations, and whether the job also learns
    its rounding on the images (`reconstructing`). The preset `auto` reads it (with the architecture) because
    the images that give an int8 job its best ranges are not the ones a reconstruction learns best from."""

    a_bits: int = 8
    reconstructing: bool = False

    @classmethod
    def job(cls, quant: QuantConfig, reconstruction=None) -> ImagesFor:
        """The use of a job quantizing as `quant` says, learning its rounding when `reconstruction` is set."""
        return cls(a_bits=quant.a_bits, reconstructing=reconstruction is not None)


INT8_JOB = ImagesFor()  # round to nearest at 8 bits: `gzsq quantize`'s and `gzsq distill`'s default job


@dataclass(frozen=True)
class CalibrationConfig:
    """Where the calibration images come from.

    source: a registered source — gzsq (distilled from the weights: the method), zeroq (BN
        statistics), gaussian / uniform noise, real (images from `data`).
    n_images, setting: None picks the default for the model (`resolved`).
    preset: the gzsq recipe: "auto" (picked from the architecture and the job), or a preset's name
        (gzsq.sources.gzsq.PRESETS).
    data: the dataset `real` draws from. saved_set: a set written by `gzsq distill`, used
        instead of making one (its own source, seed and size then apply).
    """

    source: str = "gzsq"
    n_images: int | None = None
    seed: int = 0
    preset: str = "auto"
    setting: str | None = None
    data: str | None = None
    saved_set: str | None = None

    def __post_init__(self):
        if self.n_images is not None:
            check_n_calib(self.n_images)
        check_seed(self.seed)
        if self.setting is not None and self.setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")

    def resolved(self, model, images_for: ImagesFor = INT8_JOB) -> CalibrationConfig:
        """This config with the model's defaults filled in (number of images, setting, the preset `auto`
        stands for on this model for a job of this use); an unknown gzsq preset is refused here, before any long
        work."""
        from dataclasses import replace

        preset = self.preset
        if self.source == "gzsq" and self.saved_set is None:
            from .sources.gzsq import recipe_for, resolve_preset

            preset = resolve_preset(preset, model, images_for)
            recipe_for(preset)
        return replace(self, n_images=self.n_images or default_n_calib(model),
                       setting=self.setting or default_setting(model), preset=preset)

    @property
    def label(self) -> str:
        return calib_label(self.source, self.preset)


@dataclass(frozen=True)
class SourceOptions:
    """Everything a calibration source may need besides the model, n and the seed (the sources' one
    signature: `fn(model, n, *, seed, options)`)."""

    setting: str = "bn-free"  # what the source may read: "bn" (BN statistics) or "bn-free"
    calib_data: str | None = None  # dataset path, for `real`
    calib_indices: tuple[int, ...] | None = None  # restrict `real` to these rows (2-fold protocol)
    preset: str = "auto"  # for distilling sources (gzsq); auto: picked from the architecture
    overrides: tuple[tuple[str, object], ...] = ()  # distillation settings that replace the preset's
    progress: bool = False
    checkpoint: object | None = None  # a distill.loop.Checkpoint: where distilling sources save/resume state

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")


@dataclass(frozen=True)
class DistillConfig:
    """One distillation recipe. Defaults are ZeroQ's published ones."""

    iterations: int = 500
    # Steps for the batches matched to local targets (TargetConfig.local), when they should differ from the rest's;
    # 0: `iterations` for every batch.
    local_iterations: int = 0
    lr: float = 0.5
    batch_size: int = 64  # images optimized together (statistics are taken over the batch)
    loss: str = "z"  # z | l2 | kl, applied at every target layer
    input_weight: float = 1.0  # weight of the term keeping the input itself N(0, 1)
    # Weight of a total-variation prior (mean |difference| of neighbouring pixels): distilled images are otherwise
    # 4–5× rougher than photos. At 100 on the normalized inputs (224×224, W4A8, 3 seeds): MobileNetV2 73.9 against
    # 71.7, Lite0 66.6 against 64.5 (results/lowbit/what_limits_reconstruction.md §11). 0: off.
    tv_weight: float = 0.0
    # Measure that variation on the [0, 1] pixel scale (each channel's differences over its range's width) rather
    # than on the normalized inputs, so one weight smooths alike whatever the model's normalization: at weight 100
    # on the normalized inputs, Lite0's images (range 2 wide) and MobileNetV2's (4.4) end equally rough in those
    # units, which is 1.4× photos' on Lite0's scale and 0.6× on MobileNetV2's. Lite0 at MobileNetV2's weight per unit
    # of range, W4A8, 3 seeds: 73.1 against 68.9 (§12 there). Needs the model's pixel range.
    tv_on_pixels: bool = False
    ce_weight: float = 0.0  # cross-entropy towards random target classes ("enriched" data)
    # Weight of a term that keeps each target layer's channels from moving together (their mean squared
    # correlation, `losses.channel_correlation`): distilled images' deep features otherwise collapse onto a few
    # directions, which real images' do not (results/fidelity/input_correlations.txt). Measured at 1000 (seed 0,
    # results/recon_images/): EfficientNet-Lite0 W4A8 51.8 against 48.6, MobileNetV2 46.6 against 53.4, the CIFAR
    # ResNets 4–19 pt worse at W4A4. 0: off.
    decorrelation_weight: float = 0.0
    # Weight of the same loss taken image by image: each image's own per-channel (mean, std) over its positions
    # against the layer's target, averaged over images (layers with spatial outputs only). Batch statistics alone
    # can be met by a few images carrying a channel for the rest; this asks every image to show the target.
    # Measured at 1 (seed 0, results/recon_images/): MobileNetV2 W4A8 with 64 distilled images 34.2 against 31.6,
    # with 8 55.6 against 55.0; ResNet-20 W4A4 1.5 pt worse; Lite2 int8 unchanged over 3 seeds. 0: off.
    per_image_weight: float = 0.0
    clamp_pixels: bool = False  # keep every pixel inside the valid image range
    early_stop_patience: int = 0  # stop after this many iterations without 1 % improvement; 0 = never
    min_iterations: int = 0
    distill_images: int = 0  # optimize only this many and make the rest copies of them (0: all)
    # Or size that number by pixels: optimize just enough images to cover this many pixels (at least
    # min_distill_images), so one recipe costs about the same per step at 32×32 and at 224×224. Ignored when
    # distill_images is set; 0: off.
    distill_pixels: int = 0
    # The fewest images distill_pixels optimizes: 16, the smallest batch whose statistics were trusted for int8
    # ranges. Learned rounding at 224×224 wants fewer distinct images, not more (`local-long`: 8;
    # results/lowbit/what_limits_reconstruction.md §5).
    min_distill_images: int = 16
    # The images made from the optimized ones are random crops of them, resized back, when this is below 1: the
    # smallest share of an image's area a crop keeps. Few distinct distilled images teach learned rounding better
    # than many (`local-long`: 8), so the copies are the set's only other source of variety. At 0.5, W4A8, 3 seeds:
    # MobileNetV2 67.7 against 62.5 with flips/shifts, Lite0 59.3 against 58.2; int8 unchanged
    # (results/lowbit/what_limits_reconstruction.md §9). 1: flips and shifts.
    expand_crop_scale: float = 1.0
    # Each step the model sees a random flipped crop of every optimized image (area share in [this, 1], resized
    # back), so the images match their targets at many scales and positions rather than at one pixel grid, as the
    # crop copies will need. At 0.5 in `local-long`, W4A8, 3 seeds: MobileNetV2 71.7 against 67.7, Lite0 64.5 against
    # 59.3; W6A6 level; int8 agreement on MobileNetV2 1.5 pt lower (results/lowbit/what_limits_reconstruction.md §10).
    # 0: off (the images as they are).
    augment_crop_scale: float = 0.0
    # Shift each colour channel of the distilled images so its mean over them is the normalization's centre (0),
    # then clamp to the pixel range. Nothing in the targets pins the images' colour: EfficientNet-Lite0's come out
    # with a strong cast (channel means +0.2 / −0.44 / +0.52; real photos' within ±0.25 of 0). False: as distilled.
    centre_colour: bool = False
    # Then scale each colour channel (about its mean) so its std over the distilled images is this share of the
    # channel's pixel range, and clamp. Photographs' pixel std is about a quarter of the range (ImageNet 0.23, the
    # std of torchvision's normalization; CIFAR-10 0.25); distilled images with the smoothness prior come out with
    # less contrast than that. Needs the model's pixel range. At 0.23, W4A8, seed 0: Lite0 72.0 against 67.8 with the
    # prior at 100, but 70.2 against 75.4 with it at Lite0's 222; MobileNetV2 level (§12 there). 0: as distilled.
    channel_std_share: float = 0.0
    # Share of the calibration set left as N(0, 1) noise (the `gaussian` source's images) instead of distilled:
    # the calibrated ranges are then about the wider of the two sources'. On BN-free CIFAR nets the distilled
    # images' deep ranges are narrower than real images' (results/fidelity/cifar10-vgg7-nf.md) and noise's
    # are wider; results/ablation_bnfree.md measures the mix. 0: every image distilled.
    noise_fraction: float = 0.0
    # Slope α of the amplitude spectrum the optimized images start from: 0 is white N(0, 1) noise; 1 is the
    # 1/f spectrum of natural images (pixels correlated over distance, scaled to unit variance). Measured: after
    # distillation the deep ranges are where a white start leaves them, and neither int8 on Lite0 nor
    # reconstruction on the CIFAR ResNets gained (results/fidelity/deep_width_levers.txt, results/recon_images/).
    init_spectrum: float = 0.0
    # Correlation between the colour channels of the starting images (natural images' RGB: about 0.85). 0: none.
    init_colour: float = 0.0
    # Slope α of a filter on every step's pixel gradient: each spatial frequency's amplitude times f^−α, so every
    # step moves the images' large structures more than their fine ones, and their spectra end up falling off
    # nearly as photos' do (a 1/f start alone, `init_spectrum`, did not help). Measured in
    # results/lowbit/what_limits_reconstruction.md §17. 0: off.
    grad_spectrum: float = 0.0

    def images_to_optimize(self, n: int, shape: tuple[int, ...]) -> int:
        """How many of the n images are optimized (the rest are flips/shifts of them)."""
        if 0 < self.distill_images < n:
            return self.distill_images
        if self.distill_pixels > 0:
            pixels = int(shape[-1]) * int(shape[-2])
            return min(n, max(self.min_distill_images, self.distill_pixels // pixels))
        return n

    def __post_init__(self):
        if self.loss not in LOSS_NAMES:
            raise ConfigError(f"unknown distillation loss {self.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        if self.iterations < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("distillation needs iterations >= 1, batch_size >= 2 and lr > 0")
        steps = self.local_iterations
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"local_iterations must be a whole number ≥ 0 (0: iterations), got {steps!r}")
        floor = self.min_distill_images
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 2:
            raise ConfigError(f"min_distill_images must be a whole number ≥ 2 (a batch's statistics), got {floor!r}")
        if not 0.0 <= self.noise_fraction < 1.0:
            raise ConfigError(f"noise_fraction must be in [0, 1), got {self.noise_fraction!r}")
        if not 0.0 <= self.init_spectrum <= 2.0:
            raise ConfigError(f"init_spectrum must be in [0, 2], got {self.init_spectrum!r}")
        if not 0.0 <= self.grad_spectrum <= 2.0:
            raise ConfigError(f"grad_spectrum must be in [0, 2], got {self.grad_spectrum!r}")
        if not 0.0 < self.expand_crop_scale <= 1.0:
            raise ConfigError(f"expand_crop_scale must be in (0, 1], got {self.expand_crop_scale!r}")
        if not 0.0 <= self.augment_crop_scale <= 1.0:
            raise ConfigError(f"augment_crop_scale must be in [0, 1] (0: off), got {self.augment_crop_scale!r}")
        if not 0.0 <= self.channel_std_share <= 0.5:
            raise ConfigError(f"channel_std_share must be in [0, 0.5] (0: off), got {self.channel_std_share!r}")
        if not 0.0 <= self.init_colour < 1.0:
            raise ConfigError(f"init_colour must be in [0, 1), got {self.init_colour!r}")
        if not (self.decorrelation_weight >= 0.0 and math.isfinite(self.decorrelation_weight)):
            raise ConfigError(f"decorrelation_weight must be a number ≥ 0, got {self.decorrelation_weight!r}")
        if not (self.per_image_weight >= 0.0 and math.isfinite(self.per_image_weight)):
            raise ConfigError(f"per_image_weight must be a number ≥ 0, got {self.per_image_weight!r}")


@dataclass(frozen=True)
class TargetConfig:
    """How gzsq estimates each layer's activation statistics from the weights (docs/how-it-works.md §1)."""

    rule: str = "paper"  # paper (the paper's recursion) | moments (linear-layer moment propagation)
    per_channel: bool = True
    esa: str = "mean+min"  # the paper's best for contraction layers
    relu_aware: bool = False
    order: str = "dataflow"  # dataflow | sequential (module order, the naive reading)
    coherence: float = 0.0  # moments rule only: 0 independent pixels … 1 smooth over the kernel
    depthwise_coherence: float | None = None  # the same for depthwise convs only (None: `coherence`)
    # moments rule: neighbouring pixels correlate as r^distance within a kernel window (replaces the coherence
    # above for every conv; None: off)
    pixel_correlation: float | None = None
    # Floor on target stds, as a fraction of the layer's median: channels the propagation predicts
    # as (nearly) constant, e.g. dead after a ReLU, would otherwise dominate a KL loss (σ → 0).
    std_floor: float = 0.0
    # Local targets (moments rule): during distillation each layer's target is its rule applied to the batch's
    # *current* input statistics at that layer, not to the statistics propagated from the network input, so no
    # layer inherits the errors of the layers before it (results/fidelity/deep_width_levers.txt).
    local: bool = False
    # With `local`: the share of the distilled images made with local targets; the rest are distilled with the
    # propagated ones (1: all local). Local targets left the CIFAR ResNets' deep ranges wider than real images',
    # propagated ones narrower (results/fidelity/deep_width_levers.txt); a set of both shows both.
    local_fraction: float = 1.0

    def __post_init__(self):
        f = self.local_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise ConfigError(f"local_fraction must be a number in (0, 1], got {f!r}")


@dataclass(frozen=True)
class GzsqRecipe:
    """One gzsq preset: how targets are estimated and how images are distilled to match them."""

    targets: TargetConfig = field(default_factory=TargetConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class QuantConfig:
    """What the simulator quantizes and how (docs/how-it-works.md §3). Defaults: the reference scheme."""

    w_bits: int = 8
    a_bits: int = 8
    per_channel_weights: bool = True  # symmetric per-output-channel; False: one scale per tensor
    weight_clip: str = "maxabs"  # "maxabs" or "mse" (MSE-optimal clipping, useful at ≤ 6 bits)
    observer: str = "minmax"  # activation range rule: minmax | percentile | mse
    input_bits: int = 8  # the network input is an 8-bit image whatever a_bits says
    first_last_8bit: bool = False  # keep the first and last weight layer (and their inputs) at 8 bit
    # Where activations are quantized. "spec": the reference scheme (network input, every Conv/Linear input,
    # residual-add outputs), behind every published accuracy. "runtime": every tensor an int8 runtime stores,
    # as ONNX Runtime's QDQ graphs do (also Conv/Linear outputs, pooled, padded and sliced tensors, logits);
    # use it to predict what the exported int8 model will do.
    placement: str = "spec"
    # 8-bit weights of convs (not depthwise) and linear layers on per-channel grids on which no two neighbouring
    # integers of one sign add past 128 (`primitives.pair_safe_scale`). x86 int8 kernels without VNNI add
    # neighbouring u8×s8 products in 16 bits, and on full-range weights those sums saturate: a W8A8 file written
    # from the simulator agreed with it on 92.5 % of ResNet-20's test images in ONNX Runtime on an AVX2 CPU, and on
    # 99.97 % with these grids (results/sim_export_pair_safe.txt). `gzsq quantize` turns it on for the files it
    # writes from the simulator unless --full-range-weights; `gzsq evaluate` keeps the reference scheme.
    pair_safe_8bit: bool = False

    def __post_init__(self):
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        check_bits(self.input_bits, "input_bits")
        if self.observer not in OBSERVERS:
            raise ConfigError(f"unknown observer {self.observer!r}; choose one of {', '.join(OBSERVERS)}")
        if self.placement not in ("spec", "runtime"):
            raise ConfigError(f"placement must be 'spec' or 'runtime', got {self.placement!r}")
        if self.weight_clip not in ("maxabs", "mse"):
            raise ConfigError(f"weight_clip must be 'maxabs' or 'mse', got {self.weight_clip!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def starting_point(cls, w_bits: int = 8, a_bits: int = 8, *, first_last_8bit: bool = False) -> "QuantConfig":
        """The ranges a quantize job starts from: min/max at 8 bits, MSE-clipped weights and
        activations below (round to nearest and reconstruction both measured best so:
        results/reconstruct.md)."""
        rule = "minmax" if min(w_bits, a_bits) >= 8 else "mse"
        return cls(w_bits=w_bits, a_bits=a_bits, observer=rule, weight_clip="maxabs" if rule == "minmax" else "mse",
                   first_last_8bit=first_last_8bit)


@dataclass(frozen=True)
class Int8ExportConfig:
    """How ONNX Runtime quantizes the graph. The defaults are what measured best on an AVX2 CPU's
    kernels (results/lite0_int8_gap.txt compares each switch).

    reduce_range: weights on ONNX Runtime's [−64, 64] grid, which its fused kernels cannot
        saturate without VNNI; False for CPUs with VNNI or ARM dot-product instructions.
    depthwise_full_range, pair_safe: under reduce_range, give depthwise convs the full grid
        (their kernel widens to 32 bits) and other convs the finest grid on which no pair of
        neighbouring products can overflow (`pair_safe_weight_ranges`). Both on, a file written from the
        simulator gets pair-safe 8-bit layers too (`QuantizeJob.simulated_scheme`).
    bias_correction: each conv's bias absorbs E[(W_q − W)·x] (`gzsq.export.bias_correction`).
    clip_ranges: quantize every ReLU6 (Clip) output over its bounds, [0, 6], instead of the calibrated
        min/max (`clip_bounds`). Off: on the four 224×224 models it moved gzsq's mean int8 agreement by −0.9
        (MobileNetV2) to +0.4 pt (Lite2), noise's by −1.1 to +0.3 (results/lite_int8_levers/clip_ranges.txt).
    calibration: "minmax" (the simulator's default observer) or "percentile" (ONNX Runtime's 99.999th).
    range_margin: every calibrated activation range (the network input's aside) is scaled away from zero by
        this factor before quantizing, within a Clip's bounds; 1 keeps the calibrated ranges.
    activations / weights: "uint8" or "int8". u8 activations × s8 weights is the fast path on
        AVX2; u8 weights (u8×u8 kernels) take the full grid safely but ran 2.6–3.0× slower.
    """

    per_channel: bool = True
    reduce_range: bool = True
    depthwise_full_range: bool = True
    pair_safe: bool = True
    bias_correction: bool = True
    clip_ranges: bool = False
    calibration: str = "minmax"
    range_margin: float = 1.0
    activations: str = "uint8"
    weights: str = "int8"

    def __post_init__(self):
        for name, value, choices in (("calibration", self.calibration, ("minmax", "percentile")),
                                     ("activations", self.activations, ("uint8", "int8")),
                                     ("weights", self.weights, ("uint8", "int8"))):
            if value not in choices:
                raise ConfigError(f"unknown int8 export {name} {value!r}; choose one of {', '.join(choices)}")
        margin = self.range_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 1 <= margin < math.inf:
            raise ConfigError(f"range_margin must be a number ≥ 1, got {margin!r}")


@dataclass(frozen=True)
class EvaluationConfig:
    """What to measure a job's models on. data: a labelled set (.npz, folder with labels.csv, tar of class
    folders), None for no evaluation. threads: CPU threads for ONNX Runtime (0: its default)."""

    data: str | None = None
    threads: int = 0

    def __post_init__(self):
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads must be a whole number >= 0, got {self.threads!r}")


@dataclass(frozen=True)
class QuantizeJob:
    """The main job, `gzsq quantize`: calibration images → quantized model (+ report, + evaluation).

    quant: bits and starting ranges. At W8A8 without reconstruction, ONNX Runtime's int8 quantizer
        writes the .onnx file, configured by `export`; below 8 bits or with `reconstruction`, the file
        is written from gzsq's simulation model (`from_simulator`), encodings and all.
    reconstruction: learn rounding and step sizes on the calibration images (None: round to nearest).
    keep_fp32: also write the FP32 ONNX export beside the output (OUT.fp32.onnx).
    progress: progress bars on stderr.
    resume: continue an interrupted reconstruction from OUT.partial (its calibration images and the
        units already learned), to the result an uninterrupted run gives.
    """

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    export: Int8ExportConfig = field(default_factory=Int8ExportConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    reconstruction: ReconstructConfig | None = None
    keep_fp32: bool = False
    progress: bool = False
    resume: bool = False

    @property
    def from_simulator(self) -> bool:
        """Whether the model file is written from the simulation model (below 8 bits, or reconstructed)."""
        return self.reconstruction is not None or min(self.quant.w_bits, self.quant.a_bits) < 8

    @property
    def simulated_scheme(self) -> QuantConfig:
        """The scheme of the simulation model a file is written from: `quant` with pair-safe 8-bit weight grids
        when the export keeps weights off the full grid (the default), so the runtime computes what it holds."""
        return replace(self.quant, pair_safe_8bit=self.export.reduce_range and self.export.pair_safe)


@dataclass(frozen=True)
class DistillJob:
    """`gzsq distill`: make a calibration set once and save it (.npz, optionally a preview grid).

    checkpoint_every: save the distillation state to OUT.partial every K steps (and when
    interrupted); resume: continue from it; force: overwrite outputs and discard an old OUT.partial.
    """

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    preview: str | None = None
    checkpoint_every: int = 10
    resume: bool = False
    force: bool = False
    progress: bool = False

    def __post_init__(self):
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be a positive number of steps, got {self.checkpoint_every!r}")


@dataclass(frozen=True)
class ReconstructConfig:
    """How reconstruction runs. Defaults: see results/reconstruct.md for the measurements behind them."""

    method: str = "block"  # "block" (residual block / conv+activation) or "adaround" (one layer at a time)
    iters: int = 500  # optimizer steps per unit (block or layer)
    batch_size: int | None = None  # calibration images per step (drawn with replacement); None: 32, or 8 for
    # images larger than 64×64 (with the crops below: the whole 224×224 job in minutes, not hours, on one thread)
    # Adam on the rounding variables V. None: 1e-3 for images up to 64×64, 1e-2 above. With 16×16 windows of 8
    # images a step the gradients are noisy, Adam's steps shrink, and 500 steps at 1e-3 leave the rounding
    # under-trained: at 1e-2 MobileNetV2 W4A8 gains 9.6 pt on gzsq's images (3 seeds) and 4.4 on real ones, Lite0
    # 1.1 (results/lowbit/what_limits_reconstruction.md §6), where CIFAR ResNets on full maps lose 0.8–1.5 pt (§3).
    lr: float | None = None
    act_lr: float = 1e-2  # Adam on log(step size), cosine-annealed; 0 keeps the calibrated ranges
    # The smallest a learned activation step size may get, as a share of its calibrated start (0: no bound; 1: step
    # sizes may grow, never shrink). Distilled images' deep activations can be narrower than real images' (on a
    # ResNet-56 about half as wide), and the step sizes learned on them narrow with them. W4A4 on gzsq's images
    # (results/deeper_resnet/): at 1, ResNet-56 77.57 / 78.07 (seeds 0, 1) against 64.94 unbounded; ResNet-20 and
    # -32 1.1 and 0.75 pt lower (3 seeds), ResNet-44 1.4 (seed 0), where the set is about as wide as real images:
    # off by default. At 0.9: ResNet-56 77.56 / 77.44, ResNet-32 level, ResNet-20 −0.74, ResNet-44 −0.71,
    # ResNet-20-nf +0.58, ResNet-32-nf −3.0: nothing in the weights says which way a net goes.
    act_scale_floor: float = 0.0
    drop_prob: float = 0.5  # QDrop: chance that an activation element stays float while training
    reg_weight: float = 0.01  # weight of the rounding regulariser (pushes h(V) to 0 or 1)
    warmup: float = 0.2  # share of the steps before the regulariser starts
    # Spatial crops: a unit made of local ops only (convs, pads, pools, activations, adds) whose input map
    # is larger than `crop` on a side is trained on one random crop×crop window of it per step (offsets
    # aligned to the unit's stride), its float target computed on the same window; 0: always the full map.
    # Units with a global op (pooling, linear) use the full map. None: 16 for images larger than 64×64,
    # else 0 (CIFAR-size networks train on full maps).
    crop: int | None = None
    # The unit's output error. "mse" sums the squared error over channels; "channel-normalized" first divides each
    # channel's by that channel's variance over the calibration set's float outputs, so channels the calibration
    # images barely excite weigh as much as the rest (distilled images' deep spreads are uneven: results/fidelity/);
    # "residual-normalized" does so on the units that hold a residual add and keeps "mse" on the others (stem,
    # classifier, plain conv stacks). Measured W4A4 on gzsq's images (results/lowbit/what_limits_reconstruction.md §3):
    # channel-normalized lifts the CIFAR ResNets but costs VGG7-nf 2.3 pt and EfficientNet-Lite0 W4A8 1.8;
    # residual-normalized keeps most of the ResNets' gain (3 seeds through `gzsq quantize`: ResNet-20 +0.9 pt,
    # ResNet-44 +0.5, ResNet-32-nf +2.2; ResNet-32 −0.1, ResNet-20-nf −0.3) and costs neither, hence the default.
    loss: str = "residual-normalized"
    # "channel-normalized" only: each channel's variance is floored by this share of the mean variance before
    # it divides the error; 0.01 weighs nearly every channel alike, while at 1 a channel far weaker than the mean
    # weighs about as under mse.
    channel_floor: float = 0.01

    def __post_init__(self):
        if self.method not in RECONSTRUCT_METHODS:
            raise ConfigError(f"reconstruction method must be one of {', '.join(RECONSTRUCT_METHODS)}, got {self.method!r}")
        if self.loss not in RECONSTRUCT_LOSSES:
            raise ConfigError(f"reconstruction loss must be one of {', '.join(RECONSTRUCT_LOSSES)}, got {self.loss!r}")
        for name in ("iters", "batch_size"):
            value = getattr(self, name)
            if name == "batch_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if self.crop is not None and (isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0):
            raise ConfigError(f"crop must be a whole number ≥ 0 (0: full maps) or None, got {self.crop!r}")
        for name, lo, hi, lo_open, hi_open in (("lr", 0, math.inf, True, True), ("act_lr", 0, math.inf, False, True),
                                               ("drop_prob", 0, 1, False, False),
                                               ("act_scale_floor", 0, math.inf, False, True),
                                               ("reg_weight", 0, math.inf, False, True),
                                               ("warmup", 0, 1, False, True),
                                               ("channel_floor", 0, math.inf, True, True)):
            value = getattr(self, name)
            if name == "lr" and value is None:
                continue
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi))
            if not ok:
                interval = f"{'(' if lo_open else '['}{lo}, {'∞' if hi == math.inf else hi}{')' if hi_open else ']'}"
                raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")

    def for_images(self, height: int, width: int) -> "ReconstructConfig":
        """This config with `batch_size`, `crop` and `lr` set for calibration images of this size."""
        large = height * width > 64 * 64
        return replace(self, batch_size=self.batch_size if self.batch_size is not None else (8 if large else 32),
                       crop=self.crop if self.crop is not None else (16 if large else 0),
                       lr=self.lr if self.lr is not None else (1e-2 if large else 1e-3))

    def to_dict(self) -> dict:
        return asdict(self)
