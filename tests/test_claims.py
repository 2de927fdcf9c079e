"""Tests that guard what the README claims, on the real checkpoints and CIFAR-10 test images.

- gzsq's distilled calibration beats Gaussian noise at W4A4 on a BN-trained CIFAR ResNet in the bn-free
  setting (README, W4A4 table: ResNet-32 74.69 ± 0.74 vs noise 55.24 ± 1.08 on all 10 000 images);
- the default int8 ONNX export of ResNet-20 (`gzsq quantize`, preset auto: local targets at 8 bits) agrees
  with FP32 on at least 97 % of the 10 000 test images (97.78 % measured, seed 0, one thread:
  results/cifar_int8/), at FP32 top-1 81.03 in ONNX Runtime.

- the default int8 ONNX export of the never-normalized ResNet-32 keeps its FP32 top-1 within 0.5 pt (76.07 vs
  76.20 measured), where the `default` preset's propagated targets lost 3.5 (README, int8 on the CIFAR nets);

- the default int8 ONNX export of EfficientNet-Lite0 (preset auto: local targets, each image towards a class of
  its own) agrees with FP32 on at least 98.2 % of the 500-image ImageNet sample and keeps its top-1 within 0.3 pt
  (README, int8 tables: 98.6 / 99.2 / 99.0 % over seeds 0–2, top-1 89.2 / 89.2 / 88.8 against 88.8; the `default`
  preset's propagated targets gave 97.6 / 97.8 / 97.4 %: results/imagenet_int8/).

- block reconstruction on gzsq's images beats the same on Gaussian noise at W4A4 on a BN-trained CIFAR ResNet
  in the bn-free setting by at least 1 pt (README, low bits: ResNet-32 79.54 ± 0.34 against noise's 70.39 ± 0.28, 3 seeds on
  all 10 000 images, with 256 images and 500 steps per block).

The two CIFAR int8 tests also pin the FP32 models every results table starts from: ResNet-20's 8103 of the
10 000 test images (81.03 %) and ResNet-32-nf's count from its training record, both run by ONNX Runtime.
"""

from __future__ import annotations

import json

import pytest

from gzsq.config import CalibrationConfig, ImagesFor, QuantConfig, ReconstructConfig
from gzsq.evaluation import load_eval_set
from gzsq.metrics import predict, top1
from gzsq.models import load_model
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.calibrate import calibrate, check_calibration

from .cli_tools import run_cli
from .conftest import CIFAR_TEST, IMAGENET, RESNET20, ROOT, SHARED, needs

RESNET32 = SHARED / "models/cifar10/resnet32.th"

# Measured with exactly this test's settings by `python experiments/claims_margin.py --n-images 64`
# (results/claims_margin.txt; ResNet-32, bn-free, W4A4, min/max, 64 calibration images,
# every 10th test image = 1000 images of all classes, torch on one thread as in the suite):
#   gzsq (default preset)  seeds 0/1/2: 75.7 / 74.2 / 74.2
#   gaussian noise         seeds 0/1/2: 55.3 / 54.8 / 56.6
# The test distils one gzsq set (seed 0; distillation is most of its time) and draws three noise sets. The
# worst pair measured, gzsq's lowest seed against noise's highest, is 17.6 pt apart (19.1 on 128 images, 17.7 on
# the README's 256: the file's earlier versions). The margin sits below all three: 16 pt.
W4A4_MARGIN = 16.0


@pytest.mark.timeout(300)
def test_gzsq_beats_gaussian_noise_at_w4a4_on_resnet32_bn_free():
    """bn-free: BN is folded away before calibration, so neither source reads BN statistics. gzsq's seed-0 set
    must beat every one of three noise seeds by W4A4_MARGIN. The steps of `evaluate_quantization` without its FP32
    pass, which the top-1 does not need: the same numbers as the measurement's."""
    model = load_model("cifar10-resnet32", needs(RESNET32))
    full = load_eval_set(model, needs(CIFAR_TEST))
    images, labels = full.images[::10], full.labels[::10]
    config = QuantConfig(w_bits=4, a_bits=4)

    def w4a4_top1(calib, seed):
        calibration = check_calibration(model, CalibrationConfig(source=calib, n_images=64, seed=seed,
                                                                 setting="bn-free"), ImagesFor.job(config, None))
        sim = quantize(model, calibrate(model, calibration).images, config)
        return round(top1(predict(sim, images), labels), 2)

    gzsq = w4a4_top1("gzsq", 0)
    noise = [w4a4_top1("gaussian", seed) for seed in (0, 1, 2)]
    print("gzsq", gzsq, "noise", noise)  # with -s: seed 0 of the measurement's rows
    assert gzsq - max(noise) >= W4A4_MARGIN, (gzsq, noise)


# Measured with exactly the next test's settings by `python experiments/claims_margin.py --reconstruct --iters 25
# --n-images 64` (results/claims_margin_reconstruct.txt; ResNet-32, bn-free, W4A4, MSE-clipped start, block
# reconstruction with the default loss, 25 steps per block, 64 calibration images, 1000 test images, one thread):
#   gzsq seeds 0/1/2: 74.10 / 74.10 / 74.60;  Gaussian noise seeds 0/1/2: 71.00 / 72.00 / 71.60
# Short reconstruction narrows the gap (9 pt with the job's 500 steps on 256 images); its worst pair, gzsq's lowest
# seed against noise's highest, is 2.1 pt apart (3.0 at 40 steps: the file's earlier version). The test runs seed 0
# of each and asks for 1 pt, the low-bit goal's own margin.
RECONSTRUCT_MARGIN = 1.0


@pytest.mark.timeout(480)
def test_reconstruction_on_gzsq_images_beats_it_on_noise_at_w4a4_on_resnet32_bn_free():
    """The steps of `evaluate_quantization` (the images a reconstruction job picks, the MSE-clipped start, block
    reconstruction with the job's seed) without its FP32 pass, which the top-1 does not need."""
    model = load_model("cifar10-resnet32", needs(RESNET32))
    full = load_eval_set(model, needs(CIFAR_TEST))
    images, labels = full.images[::10], full.labels[::10]
    quant, recipe = QuantConfig.starting_point(4, 4), ReconstructConfig(iters=25)
    assert recipe.loss == "residual-normalized"  # the default loss, which the measurement used

    def w4a4_top1(calib):
        calibration = check_calibration(model, CalibrationConfig(source=calib, n_images=64, seed=0,
                                                                 setting="bn-free"), ImagesFor.job(quant, recipe))
        calib_images = calibrate(model, calibration).images
        sim = reconstruct(model, quantize(model, calib_images, quant), calib_images, recipe, seed=0)
        return round(top1(predict(sim, images), labels), 2)

    gzsq, noise = w4a4_top1("gzsq"), w4a4_top1("gaussian")
    print("gzsq", gzsq, "noise", noise)  # with -s: seed 0 of the measurement's rows
    assert gzsq - noise >= RECONSTRUCT_MARGIN, (gzsq, noise)


@pytest.mark.timeout(360)
def test_default_int8_export_of_resnet20_agrees_with_fp32(tmp_path):
    """`gzsq quantize cifar10-resnet20 --weights … -o r20.onnx --eval-data test.npz`: the default export
    (gzsq calibration with local targets, pair-safe weight grids, bias correction), both models run in ONNX
    Runtime on all 10 000 test images. Measured: agreement 97.78 %, FP32 top-1 81.03, int8 81.02 (the `default`
    preset's propagated targets: 98.14 %, 81.21; results/cifar_int8/) (torch on one thread:
    the calibration images, hence the ranges, depend on the thread count; see test_determinism.py)."""
    out = tmp_path / "r20.onnx"
    r = run_cli(["quantize", "cifar10-resnet20", "--weights", needs(RESNET20), "-o", out,
                 "--eval-data", needs(CIFAR_TEST), "--threads", "1", "--json"])
    assert r.code == 0, str(r)
    report = json.loads(r.out.strip().splitlines()[-1])
    assert report["calib"] == "gzsq-local" and report["n_calib"] == 256 and out.exists()
    e = report["evaluation"]
    assert e["images"] == 10000
    assert e["fp32_top1"] == 81.03
    assert e["agreement"] >= 97.0, e
    assert abs(e["int8_top1"] - e["fp32_top1"]) <= 1.0, e


@pytest.mark.timeout(360)
def test_default_int8_export_of_the_bn_free_resnet32_keeps_its_fp32_top1(tmp_path):
    """README, int8 on the CIFAR nets: `gzsq quantize cifar10-resnet32-nf -o r32nf.onnx --eval-data test.npz` takes local
    targets (auto at 8 bits) and keeps FP32's top-1. Measured with this command (seed 0, one thread,
    results/cifar_int8/): 76.07 against 76.20, agreement 97.58 %; the `default` preset's propagated targets clip
    the deep ranges and gave 72.67, 90.30 %. The bounds sit between the two."""
    out = tmp_path / "r32nf.onnx"
    r = run_cli(["quantize", "cifar10-resnet32-nf", "-o", out, "--eval-data", needs(CIFAR_TEST), "--threads", "1",
                 "--json"])
    assert r.code == 0, str(r)
    report = json.loads(r.out.strip().splitlines()[-1])
    assert report["calib"] == "gzsq-local" and report["setting"] == "bn-free" and out.exists()
    e = report["evaluation"]
    recorded = json.loads((ROOT / "results/bnfree_training_resnet32.json").read_text())["final_test_top1"]
    assert e["images"] == 10000 and e["fp32_top1"] == round(recorded * 100, 2)
    assert e["int8_top1"] >= e["fp32_top1"] - 0.5, e
    assert e["agreement"] >= 96.5, e


@pytest.mark.timeout(360)
def test_default_int8_export_of_efficientnet_lite0_agrees_with_fp32(tmp_path):
    """`gzsq quantize efficientnet-lite0 -o lite0.onnx --eval-data imagenet-sample`, seed 0, one thread, the
    command of results/imagenet_int8/ (98.6 % agreement, int8 89.2 vs FP32 88.8). The bound, 98.2 %, is two
    images under that (room for another CPU's float rounding) and above every seed of the `default` preset (at
    most 97.8 % there, 98.0 % in results/quantize/), so the test fails if the default stops picking local targets
    for this depthwise-separable model. Top-1 is held to FP32 − 0.5: on an AMD EPYC with AVX2 and no VNNI the same
    command gives 88.4 % (agreement 98.8 %), two images under FP32 − 0.3, as ONNX Runtime's int8 kernels differ by CPU."""
    out = tmp_path / "lite0.onnx"
    r = run_cli(["quantize", "efficientnet-lite0", "-o", out, "--setting", "bn-free", "--eval-data", needs(IMAGENET),
                 "--seed", "0", "--threads", "1", "--json"])
    assert r.code == 0, str(r)
    report = json.loads(r.out.strip().splitlines()[-1])
    assert report["calib"] == "gzsq-local-classes" and report["n_calib"] == 64 and out.exists()
    e = report["evaluation"]
    assert e["images"] == 500 and e["fp32_top1"] == 88.8
    assert e["agreement"] >= 98.2, e
    assert e["int8_top1"] >= e["fp32_top1"] - 0.5, e


def _deep_width_ratios(n_images: int, seed: int) -> dict:
    """Median over ResNet-32's last third of the modules of (range width on the distilled images / on `n_images`
    CIFAR-10 test images at an even stride), for the `default` and `local` presets. The test set is stored class by
    class: its first images are all airplanes, so the stride is what makes the reference cover every class."""
    import statistics

    from gzsq.fold import fold_bn
    from gzsq.metrics import output_widths

    model = load_model("cifar10-resnet32", str(needs(RESNET32)))
    net = fold_bn(model).eval()
    images = load_eval_set(model, needs(CIFAR_TEST)).images
    real = images[::len(images) // n_images][:n_images].float()
    ref = output_widths(net, real)
    deep = list(ref)[2 * len(ref) // 3:]
    ratio = {}
    for preset in ("default", "local"):
        images = calibrate(model, CalibrationConfig(source="gzsq", preset=preset, n_images=n_images, seed=seed,
                                                    setting="bn-free")).images
        got = output_widths(net, images)
        ratio[preset] = statistics.median(got[k] / ref[k] for k in deep)
    return ratio


# Measured with `python -m tests.test_claims` (64 images, seeds 0/1/2, one thread; results/claims_margin_widths.txt):
# default 0.63 / 0.61 / 0.64, local 1.32 / 1.23 / 1.30. (Against the first 64 test images, all airplanes, the file's
# earlier versions measured 0.73 / 0.70 / 0.73 and 1.45 / 1.41 / 1.41.)
@pytest.mark.timeout(300)
def test_local_targets_widen_resnet32s_deep_ranges_past_real_images():
    """README / docs/how-it-works.md §1: with local targets the deep layers' ranges go from narrower than real
    images' to wider (ResNet-32, last third of the modules, median width ratio)."""
    ratio = _deep_width_ratios(64, seed=0)
    assert ratio["default"] < 0.8 and ratio["local"] > 1.1, ratio


if __name__ == "__main__":  # the measurement quoted above
    import torch

    torch.set_num_threads(1)
    for seed in (0, 1, 2):
        print(seed, {k: round(v, 2) for k, v in _deep_width_ratios(64, seed).items()})
