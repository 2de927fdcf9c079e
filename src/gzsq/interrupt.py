"""Ctrl-C (SIGINT) and SIGTERM that always stop a run, at a safe point, within about a second.

Why not rely on Python's KeyboardInterrupt: a process started in the background
by a non-interactive shell (CI runners, `cmd &`, nohup) inherits SIGINT as
*ignored*, and Python then never installs its handler, so Ctrl-C (or a test's
SIGINT) did nothing. And an exception raised at an arbitrary bytecode can land
half-way through a checkpoint's bookkeeping. So the CLI installs its own handler
(`signals_handled`), which only records the signal; long loops call `check` at
safe points (each optimizer step, each batch, between stages), which raises
`Interrupted`. A second signal while the first is pending raises at once, so a
stuck third-party call can still be left.

Used as a library (no handler installed) nothing changes: `check` is a no-op and
Python's own KeyboardInterrupt behaves as usual.

Tests reach a stage without timing luck through `GZSQ_SIGNAL_TEST=FD:STAGE`: the
first time `check(STAGE)` runs, the process writes `STAGE` and a newline to file
descriptor FD, then waits (up to a minute) for a signal, and carries on with its
normal work until the next safe point — so the test measures how soon real work
notices the signal.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

_HANDLED = (signal.SIGINT, signal.SIGTERM)
_NAMES = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}

_pending: int | None = None  # the signal received and not yet acted on
_installed = False
_announced: set[str] = set()


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal. A KeyboardInterrupt, so code that cleans up on Ctrl-C cleans up on it.

    `signum` is the signal; `exit_code` what a shell expects (128 + signum: 130 for SIGINT)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(describe(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def describe(signum: int) -> str:
    """'interrupted (Ctrl-C)' / 'terminated (SIGTERM)': how a message names the signal."""
    return _NAMES.get(signum, f"stopped by signal {signum}")


def _on_signal(signum, frame) -> None:
    global _pending
    if _pending is not None:  # the second one: do not wait for a safe point
        raise Interrupted(signum)
    _pending = signum


@contextmanager
def signals_handled() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set a flag that `check` turns into `Interrupted`.

    Installed whatever the inherited disposition (a background process starts with SIGINT ignored);
    the previous handlers come back afterwards. Outside the main thread it does nothing (Python
    only lets the main thread set handlers).
    """
    global _pending, _installed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in _HANDLED}
    _pending, _installed = None, True
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending, _installed = None, False
        _announced.clear()


def requested(stage: str = "") -> bool:
    """True once a handled signal has arrived: the caller saves what it wants kept, then calls `check`."""
    if _installed and stage and stage not in _announced and _announce(stage):
        return False  # a test's signal arrived while waiting here: the next safe point acts on it
    return _pending is not None


def check(stage: str = "") -> None:
    """A safe point: raise `Interrupted` if a handled signal arrived. `stage` names the point (see module doc)."""
    if requested(stage):
        raise Interrupted(_pending)


def _announce(stage: str) -> bool:
    """Tell a waiting test that `stage` is reached and wait for its signal; → True if this process waited."""
    _announced.add(stage)
    fd, _, wanted = os.environ.get("GZSQ_SIGNAL_TEST", "").partition(":")
    if not fd.isdigit() or wanted != stage:
        return False
    os.write(int(fd), f"{stage}\n".encode())
    deadline = time.monotonic() + 60
    while _pending is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return True
