"""Ctrl-C and SIGTERM stop every long stage of a real `gzsq` process (gzsq.interrupt).

No timing luck: the child is started with SIGINT *ignored* (as a background job of a
non-interactive shell, or CI, starts it), announces on a pipe when it reaches the stage
under test (`GZSQ_SIGNAL_TEST=FD:STAGE`) and waits there for the signal; then it carries on
with its real work until its next safe point. Each test checks: the exit code (130 for
SIGINT, 143 for SIGTERM), exactly one `gzsq: error:` line on stderr, nothing at the output
path, and how long the child took from the signal to its exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gzsq import interrupt

from .cli_tools import CliResult, _env, assert_nothing_at, assert_one_line_error, run_cli_process
from .conftest import CIFAR_TEST, RESNET20, needs

# "About a second" is the goal; a loaded 2-core CI machine gets a margin on top.
MAX_SECONDS_TO_STOP = 3.0


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def signal_at(stage: str, args: list, sig: int = signal.SIGINT) -> tuple[CliResult, float]:
    """Run `gzsq ARGS`, send `sig` once it reaches `stage`; → (result, seconds from the signal to the exit)."""
    read_fd, write_fd = os.pipe()
    env = _env()
    env["GZSQ_SIGNAL_TEST"] = f"{write_fd}:{stage}"
    proc = subprocess.Popen([sys.executable, "-m", "gzsq.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, pass_fds=(write_fd,),
                            preexec_fn=_ignore_sigint)
    os.close(write_fd)
    with os.fdopen(read_fd) as announcements:
        line = announcements.readline()  # blocks until the stage is reached, or EOF if the child exits first
    if line.strip() != stage:
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the child never reached {stage!r}:\n{CliResult(proc.returncode, out, err)}")
    proc.send_signal(sig)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=120)
    seconds = time.monotonic() - sent
    print(f"{stage}: {signal.Signals(sig).name} -> exit {proc.returncode} after {seconds:.2f} s")  # seen with -s
    return CliResult(proc.returncode, out, err), seconds


def _r20(*args) -> list:
    return ["--weights", needs(RESNET20), *args]


def test_ctrl_c_during_distillation_keeps_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "set.npz"
    args = ["distill", "cifar10-resnet20", *_r20("-o", out, "--n-calib", "16", "--seed", "1")]
    result, seconds = signal_at("distill", args)
    assert_one_line_error(result, "interrupted (Ctrl-C)", "--resume", code=130)
    assert seconds < MAX_SECONDS_TO_STOP, seconds
    assert_nothing_at(out)
    partial = Path(f"{out}.partial")
    assert partial.exists()
    # The checkpoint written at the interrupt resumes to the very images of an uninterrupted run.
    resumed = run_cli_process([*args, "--resume"])
    assert resumed.code == 0, str(resumed)
    assert not partial.exists()
    whole = run_cli_process(["distill", "cifar10-resnet20", *_r20("-o", tmp_path / "whole.npz", "--n-calib", "16",
                                                                  "--seed", "1")])
    assert whole.code == 0, str(whole)
    assert out.read_bytes() == (tmp_path / "whole.npz").read_bytes()


def test_ctrl_c_during_int8_calibration(tmp_path):
    out = tmp_path / "r20.onnx"
    result, seconds = signal_at("int8-calibration", ["quantize", "cifar10-resnet20",
                                                     *_r20("-o", out, "--calib", "gaussian", "--n-calib", "64")])
    assert_one_line_error(result, "interrupted (Ctrl-C)", code=130)
    assert seconds < MAX_SECONDS_TO_STOP, seconds
    assert_nothing_at(out, out.with_suffix(".report.json"), out.with_suffix(".report.md"))
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def every_10th_test_image(tmp_path_factory) -> Path:
    """Every 10th CIFAR-10 test image: the stages under test start after the FP32 evaluation, which on all
    10 000 images took most of each test's time."""
    data = np.load(needs(CIFAR_TEST))
    path = tmp_path_factory.mktemp("data") / "test1000.npz"
    np.savez(path, images=data["images"][::10], labels=data["labels"][::10])
    return path


@pytest.mark.parametrize("stage,extra", [
    ("evaluate", []),
    ("sim-calibration", []),
    ("reconstruct", ["--w-bits", "4", "--a-bits", "4", "--reconstruct", "block"]),
])
def test_ctrl_c_during_evaluation_and_reconstruction(stage, extra, every_10th_test_image):
    command = ["evaluate", "--model", "cifar10-resnet20", "--data", every_10th_test_image, "--calib", "gaussian",
               *extra]
    result, seconds = signal_at(stage, [*command, *_r20("--n-calib", "256")])
    assert_one_line_error(result, "interrupted (Ctrl-C)", code=130)
    assert seconds < MAX_SECONDS_TO_STOP, seconds
    assert result.out == ""


def test_sigterm_during_onnx_evaluation_exits_143(tmp_path):
    out = tmp_path / "r20.onnx"
    result, seconds = signal_at("onnx-evaluate", ["quantize", "cifar10-resnet20",
                                                  *_r20("-o", out, "--calib", "gaussian", "--n-calib", "32",
                                                        "--eval-data", CIFAR_TEST)], signal.SIGTERM)
    assert_one_line_error(result, "terminated (SIGTERM)", code=143)
    assert seconds < MAX_SECONDS_TO_STOP, seconds
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())  # the model it had written is removed again


# ---------------------------------------------------------------- the mechanism, in-process


def test_check_is_a_no_op_without_a_handler():
    interrupt.check("anything")  # a library user's process: nothing installed, nothing raised


def test_a_signal_is_acted_on_at_the_next_safe_point():
    with interrupt.signals_handled():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes; it only records the signal
        assert interrupt.requested()
        with pytest.raises(interrupt.Interrupted) as caught:
            interrupt.check()
    assert caught.value.exit_code == 130 and isinstance(caught.value, KeyboardInterrupt)
    assert not interrupt.requested()  # handlers and state are given back when the block ends


def test_a_second_signal_raises_at_once():
    with interrupt.signals_handled():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with pytest.raises(interrupt.Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here, without a safe point
    assert caught.value.exit_code == 143


def test_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.signals_handled():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


def test_the_interrupted_write_leaves_nothing(tmp_path):
    from gzsq.atomic import atomic_path

    target = tmp_path / "m.onnx"
    with interrupt.signals_handled():
        with pytest.raises(interrupt.Interrupted):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"x")
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
    assert_nothing_at(target)
    assert np.array([p.name for p in tmp_path.iterdir()]).size == 0
