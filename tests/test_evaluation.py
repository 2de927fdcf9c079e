"""The evaluation protocol: predictions, top-1/agreement, and the two-fold rule for `real` calibration."""

import numpy as np
import torch

from gzsq.config import CalibrationConfig, QuantConfig
from gzsq.evaluation import EvalSet, calibration_folds, evaluate_quantization, load_eval_set, predict, top1


def _eval_set(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 8, 8, generator=gen)
    return EvalSet("synthetic", images, np.arange(n) % 5)


def test_predict_is_the_argmax_and_gives_the_model_back_unchanged(tiny):
    images = _eval_set().images
    with torch.no_grad():
        expected = tiny(images).argmax(1).numpy()
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    got = predict(tiny, images, batch_size=7)  # batches that do not divide the set
    assert np.array_equal(got, expected)
    assert all(p.is_contiguous() for p in tiny.parameters())
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_top1_is_a_percentage():
    assert top1(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 50.0


def test_real_calibration_on_the_evaluation_set_never_sees_an_evaluated_image(tiny, tmp_path):
    """When `real` draws from the evaluation set, each fold calibrates on one half and is scored on the other."""
    rng = np.random.default_rng(0)
    path = tmp_path / "set.npz"
    np.savez(path, images=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), labels=np.arange(40) % 5)
    eval_set = load_eval_set(tiny, path)
    folds = calibration_folds(tiny, eval_set, CalibrationConfig(source="real", n_images=8, setting="bn"))
    assert len(folds) == 2
    rows = np.concatenate([f.eval_rows for f in folds])
    assert sorted(rows.tolist()) == list(range(len(eval_set.labels)))
    for fold, other in zip(folds, reversed(folds)):
        # the calibration images of a fold are rows of the *other* fold's evaluation half
        for image in fold.images:
            hits = [r for r in range(len(eval_set.labels)) if torch.equal(eval_set.images[r], image)]
            assert hits and all(r in set(other.eval_rows.tolist()) for r in hits)


def test_one_row_of_the_table(tiny):
    data = _eval_set()
    row = evaluate_quantization(tiny, data, CalibrationConfig(source="gaussian", n_images=16, seed=1),
                                QuantConfig(w_bits=8, a_bits=8))
    assert row["calib"] == "gaussian" and row["folds"] == 1 and row["setting"] == "bn"
    assert row["fp32_top1"] == round(top1(predict(tiny, data.images), data.labels), 2)
    # 8-bit quantization of a tiny net on its own inputs should agree with FP32 on almost every image
    assert row["agreement"] >= 90


def test_output_widths_are_each_leaf_modules_min_max_span():
    from torch import nn

    from gzsq.metrics import output_widths

    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
    x = torch.tensor([-1.0, 0.5, 3.0]).view(1, 1, 1, 3)
    widths = output_widths(net, x)
    assert widths == {"0": 9.0, "1": 3.0}  # conv: x and -2x span [-6, 3]; relu: [0, 3]
    assert not net[0]._forward_hooks and not net[1]._forward_hooks
