"""Long runs through the CLI: byte-identical outputs, Ctrl-C then --resume, -q / -v, stdout vs stderr."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gzsq.distillation import loop as distill_loop

from .cli_tools import assert_nothing_at, assert_one_line_error, run_cli
from .conftest import RESNET20, needs


def _distill(out, *extra, n=8, seed=1):
    return run_cli(["distill", "cifar10-resnet20", "--weights", needs(RESNET20), "-o", out, "--n-calib", n,
                    "--seed", seed, *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted gzsq run (seed 1, 8 images) with its preview: what every other run must equal."""
    d = tmp_path_factory.mktemp("ref")
    r = _distill(d / "ref.npz", "--preview", d / "ref.png")
    assert r.code == 0, str(r)
    return d / "ref.npz", d / "ref.png"


def test_same_seed_same_bytes(tmp_path, reference):
    r = _distill(tmp_path / "again.npz", "--preview", tmp_path / "again.png")
    assert r.code == 0, str(r)
    assert (tmp_path / "again.npz").read_bytes() == reference[0].read_bytes()
    assert (tmp_path / "again.png").read_bytes() == reference[1].read_bytes()
    with np.load(reference[0]) as z:  # a real set, not an empty file that trivially matches
        assert z["images"].shape == (8, 3, 32, 32) and np.isfinite(z["images"]).all()


def test_results_on_stdout_nothing_on_stderr(tmp_path, reference):
    r = _distill(tmp_path / "s.npz", "--calib", "gaussian")
    assert r.code == 0 and r.out.startswith("wrote 8 images from gaussian") and r.err == ""
    assert not Path(f"{tmp_path / 's.npz'}.partial").exists()


def test_ctrl_c_then_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch, reference):
    out = tmp_path / "set.npz"
    partial = Path(f"{out}.partial")
    calls = {"n": 0}
    kl = distill_loop.LOSSES["kl"]

    def interrupt_later(*args):  # ~21 loss terms per iteration on ResNet-20: Ctrl-C around iteration 14
        calls["n"] += 1
        if calls["n"] == 300:
            raise KeyboardInterrupt
        return kl(*args)

    monkeypatch.setitem(distill_loop.LOSSES, "kl", interrupt_later)
    r = _distill(out, "--checkpoint-every", "5")
    assert_one_line_error(r, "interrupted", f"{partial}", "--resume", code=130)
    assert_nothing_at(out)
    saved = torch.load(partial, weights_only=True)
    assert (saved["batch"], saved["it"]) == (0, 10)  # the last checkpoint before iteration ~14

    r = _distill(out, "--checkpoint-every", "5")  # forgot --resume: refused, checkpoint kept
    assert_one_line_error(r, "interrupted run", "--resume", "--force")
    assert partial.exists()
    assert_one_line_error(_distill(out, "--resume", seed=7), "different run")  # another run's checkpoint: kept
    assert partial.exists()

    monkeypatch.setitem(distill_loop.LOSSES, "kl", kl)
    r = _distill(out, "--resume", "--checkpoint-every", "5")
    assert r.code == 0, str(r)
    assert "resumed the interrupted run" in r.err and r.out.startswith("wrote 8 images")
    assert not partial.exists()
    assert out.read_bytes() == reference[0].read_bytes()


def test_force_starts_over_despite_a_checkpoint(tmp_path):
    out = tmp_path / "set.npz"
    out.write_bytes(b"old")
    Path(f"{out}.partial").write_bytes(b"stale")
    r = _distill(out, "--force", "--calib", "gaussian")
    assert r.code == 0 and "started over" in r.err, str(r)
    assert out.read_bytes() != b"old" and not Path(f"{out}.partial").exists()


def test_broken_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "s.npz"
    Path(f"{out}.partial").write_bytes(b"garbage")
    assert_one_line_error(_distill(out, "--resume"), "cannot resume", "delete it")


def test_quiet_and_verbose(tmp_path):
    out = tmp_path / "s.npz"
    r = _distill(out, "--resume", "--calib", "gaussian")  # no checkpoint to resume: a note
    assert r.code == 0 and "ran from the beginning" in r.err
    out.unlink()
    r = run_cli(["-q", "distill", "cifar10-resnet20", "--weights", needs(RESNET20), "-o", out, "--n-calib", "8",
                 "--resume", "--calib", "gaussian"])
    assert r.code == 0 and r.err == "" and r.out.startswith("wrote 8 images")
    out.unlink()
    r = _distill(out, "-v", n=2)  # -v: progress bars (tqdm, with rate/ETA) even though stderr is no terminal
    assert r.code == 0 and "gzsq[local]" in r.err and "it/s" in r.err
