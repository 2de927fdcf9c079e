"""Atomic output files: a temp file in the target's folder, then one rename.

A run that fails, is interrupted or is killed must never leave a half-written
model, report or calibration set where the user expects a finished one. Every
writer in gzsq (and in experiments/) goes through `atomic_path`: it yields a
hidden temp path next to the target, and only when the block finishes without
an exception is that file fsync'ed and renamed over the target (`os.replace`
is atomic within one filesystem, which is why the temp file lives in the same
folder). On any exception, KeyboardInterrupt included, the temp file is removed.

`ensure_output_path` is the check a command makes *before* its long work: the
path must not exist (unless `force`), must not be a folder, and its folder must
be writable — discovered by creating and removing a probe file, since
`os.access` lies for root and for read-only filesystems.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import interrupt
from .errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path, *, interruptible: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, on any error remove it.

    The temp file exists (empty) when the block starts, so writers that open by
    name (PIL, matplotlib, torch.save) can use it; it gets the permissions a
    plain `open(path, "w")` would have given, not mkstemp's 0600. It keeps the
    target's suffix (`.r20.pt2.k2x9.pt2`): some writers check it. The moment
    before the rename is a safe point for Ctrl-C (`gzsq.interrupt`): a run stopped
    there leaves nothing at `path`, unless `interruptible=False`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if interruptible:
            interrupt.check()
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, interruptible: bool = True, **kwargs) -> Iterator:
    """`open()` for writing, atomically: the target appears only once the block succeeded."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not a 'w' mode")
    with atomic_path(path, interruptible=interruptible) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_bytes(path: str | Path, data: bytes | Callable, *, interruptible: bool = True) -> None:
    """Write `data` (bytes, or a function called with a binary file) to `path` atomically."""
    with atomic_open(path, "wb", interruptible=interruptible) as f:
        if callable(data):
            data(f)
        else:
            f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


write_text_atomic = atomic_write_text  # the name gzsq quantize's report writer uses


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def ensure_output_path(path: str | Path, *, force: bool = False, flag: str = "-o") -> Path:
    """Refuse, before any long work, an output path that exists (unless `force`) or cannot be written.

    Creates the missing parent folders (as the writer would) and proves the
    folder writable with a probe file. `flag` names the option in messages.
    Raises OutputError with one line saying what to do.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise OutputError(f"{flag} needs a file name")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give {flag} a file name inside it")
    if path.exists() and not force:
        raise OutputError(f"{path} already exists; pass --force to overwrite it or choose another {flag}")
    parent = path.parent
    existing = _nearest_existing(parent)
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file, not a folder (choose another {flag})")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent, prefix=f".{path.name}.probe."):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write to folder {parent}: {reason} (choose a writable {flag})") from None
    return path
