"""An interrupted reconstruction resumes where it stopped (gzsq.partial, `reconstruct(resume=…)`,
`gzsq quantize --resume`), to the very model an uninterrupted run writes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from gzsq import partial as P
from gzsq.config import QuantConfig
from gzsq.errors import UnsupportedModelError
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import ReconstructConfig, reconstruct

from .cli_tools import assert_nothing_at, assert_one_line_error, run_cli
from .conftest import RESNET20, make_tiny, needs
from .test_interrupt import MAX_SECONDS_TO_STOP, signal_at

FAST = ReconstructConfig(iters=20, batch_size=16)


class _Stop(Exception):
    pass


def _tiny():
    model = make_tiny(seed=3)
    calib = torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    return model, calib, quantize(model, calib, QuantConfig(w_bits=4, a_bits=4))


def _same_model(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return a.encodings() == b.encodings() and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method", ["block", "adaround"])
def test_resuming_after_any_unit_gives_the_uninterrupted_result(method):
    model, calib, sim = _tiny()
    config = ReconstructConfig(method=method, iters=20, batch_size=16)
    states = []
    whole = reconstruct(model, sim, calib, config, seed=5, on_unit=states.append)
    assert len(states) >= 3 and [len(s["units"]) for s in states] == list(range(1, len(states) + 1))
    for stop_after in (1, len(states) - 1):
        saved = []

        def save_then_stop(state, saved=saved, stop_after=stop_after):
            saved.append(state)
            if len(saved) == stop_after:
                raise _Stop
        with pytest.raises(_Stop):
            reconstruct(model, sim, calib, config, seed=5, on_unit=save_then_stop)
        resumed = reconstruct(model, sim, calib, config, seed=5, resume=saved[-1])
        assert _same_model(resumed, whole), stop_after
        assert [u["unit"] for u in resumed.reconstruction["units"]] == [u["unit"] for u in whole.reconstruction["units"]]


def test_progress_of_another_model_is_refused_in_one_line():
    model, calib, sim = _tiny()
    states = []
    reconstruct(model, sim, calib, FAST, on_unit=states.append)
    damaged = dict(states[0], units=["not-a-layer"])
    with pytest.raises(UnsupportedModelError) as err:
        reconstruct(model, sim, calib, FAST, resume=damaged)
    assert "does not belong" in str(err.value) and "\n" not in str(err.value)
    layer = next(iter(states[0]["round_up"]))
    wrong_shape = dict(states[0], round_up={layer: torch.zeros(3, dtype=torch.bool)})
    with pytest.raises(UnsupportedModelError):
        reconstruct(model, sim, calib, FAST, resume=wrong_shape)
    older = dict(states[0], format="gzsq-reconstruct-progress/2")  # a format this version does not read
    with pytest.raises(UnsupportedModelError):
        reconstruct(model, sim, calib, FAST, resume=older)


def _r20_w4a4(out: Path, *extra) -> list:
    return ["quantize", "cifar10-resnet20", "--weights", needs(RESNET20), "--w-bits", "4", "--a-bits", "4",
            "--reconstruct-iters", "5", "--n-calib", "32", "--threads", "1", "-o", out, *extra]


def test_ctrl_c_during_reconstruction_keeps_a_partial_with_the_images(tmp_path):
    out = tmp_path / "r20.onnx"
    result, seconds = signal_at("reconstruct", _r20_w4a4(out))  # a real signal, in the first unit
    assert_one_line_error(result, "interrupted (Ctrl-C)", "no unit finished yet", "--resume", code=130)
    assert seconds < MAX_SECONDS_TO_STOP, seconds
    assert_nothing_at(out, out.with_suffix(".report.json"), out.with_suffix(".encodings.json"))
    assert Path(f"{out}.partial").exists()
    refused = run_cli(_r20_w4a4(out))  # neither --resume nor --force: a decision is needed
    assert_one_line_error(refused, "interrupted reconstruction", "--resume", "--force")


def test_an_interrupted_quantize_resumes_to_the_same_model(tmp_path, monkeypatch):
    out = tmp_path / "r20.onnx"
    partial = Path(f"{out}.partial")
    save = P.Partial.save

    def save_then_stop(self, calibration, progress):  # Ctrl-C right after the second unit was saved
        save(self, calibration, progress)
        if progress and len(progress["units"]) == 2:
            raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(P.Partial, "save", save_then_stop)
        stopped = run_cli(_r20_w4a4(out))
    assert_one_line_error(stopped, "interrupted (Ctrl-C)", "(2 of ", "units learned", "--resume", code=130)
    assert not out.exists() and partial.exists()
    other = run_cli(_r20_w4a4(out, "--resume", "--seed", "1"))
    assert_one_line_error(other, "different run")
    assert partial.exists()

    resumed = run_cli(_r20_w4a4(out, "--resume"))
    assert resumed.code == 0, str(resumed)
    assert "resumed the interrupted reconstruction" in resumed.err
    assert not partial.exists()
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["seconds"]["calibration_data"] < 1.0  # the saved images, not a second distillation

    whole = run_cli(_r20_w4a4(tmp_path / "whole.onnx"))
    assert whole.code == 0, str(whole)
    assert out.read_bytes() == (tmp_path / "whole.onnx").read_bytes()
    enc = json.loads(out.with_suffix(".encodings.json").read_text())
    enc_whole = json.loads((tmp_path / "whole.encodings.json").read_text())
    assert enc["activations"] == enc_whole["activations"] and enc["weights"] == enc_whole["weights"]


def test_resume_without_a_partial_runs_from_the_start_and_says_so(tmp_path):
    out = tmp_path / "r20.onnx"
    result = run_cli(_r20_w4a4(out, "--resume", "--reconstruct-iters", "1", "--n-calib", "8"))
    assert result.code == 0, str(result)
    assert "there was no" in result.err and out.exists() and not Path(f"{out}.partial").exists()


def test_resume_needs_a_reconstruction(tmp_path):
    result = run_cli(["quantize", "cifar10-resnet20", "--weights", needs(RESNET20), "-o", tmp_path / "r20.onnx",
                      "--resume"])
    assert_one_line_error(result, "--resume", "reconstruction")
    assert not list(tmp_path.iterdir())


def test_force_discards_an_old_partial(tmp_path):
    out = tmp_path / "r20.onnx"
    partial = Path(f"{out}.partial")
    partial.write_bytes(b"an interrupted run")
    result = run_cli(_r20_w4a4(out, "--force", "--reconstruct-iters", "1", "--n-calib", "8"))
    assert result.code == 0, str(result)
    assert out.exists() and not partial.exists()


def test_a_damaged_partial_is_a_one_line_error_and_is_kept(tmp_path):
    out = tmp_path / "r20.onnx"
    partial = Path(f"{out}.partial")
    partial.write_bytes(b"not a checkpoint")
    result = run_cli(_r20_w4a4(out, "--resume"))
    assert_one_line_error(result, "cannot resume", "damaged")
    assert partial.read_bytes() == b"not a checkpoint"
    assert not out.exists()


def test_sigterm_names_the_signal(tmp_path):
    out = tmp_path / "r20.onnx"
    result, _ = signal_at("reconstruct", _r20_w4a4(out, "--calib", "gaussian"), signal.SIGTERM)  # no distillation first
    assert_one_line_error(result, "terminated (SIGTERM)", "--resume", code=143)
