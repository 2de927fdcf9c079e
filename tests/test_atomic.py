"""Atomic writes: the target appears whole or not at all; temp files never outlive a failure."""

import os
import stat

import pytest

from gzsq.atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text, ensure_output_path
from gzsq.errors import OutputError


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_write_then_rename(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"abc")
    atomic_write_text(tmp_path / "b.txt", "é\n")
    atomic_write_bytes(tmp_path / "c.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "a.bin").read_bytes() == b"abc" and (tmp_path / "b.txt").read_text("utf-8") == "é\n"
    assert (tmp_path / "c.bin").read_bytes() == b"xyz"
    assert _siblings(tmp_path / "a.bin") == ["a.bin", "b.txt", "c.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and _siblings(target) == ["model.bin"]


def test_ctrl_c_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert _siblings(target) == []


def test_temp_file_is_hidden_beside_the_target_and_permissions_are_normal(tmp_path):
    target = tmp_path / "sub" / "out.npz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.npz.") and not target.exists()
        tmp.write_bytes(b"x")
    mode = stat.S_IMODE(os.stat(target).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_atomic_open_refuses_append():
    with pytest.raises(ValueError):
        with atomic_open("x", "ab"):
            pass


def test_ensure_output_path(tmp_path):
    assert ensure_output_path(tmp_path / "a" / "b.npz") == tmp_path / "a" / "b.npz"
    assert (tmp_path / "a").is_dir() and list((tmp_path / "a").iterdir()) == []  # the probe is gone
    (tmp_path / "a" / "b.npz").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        ensure_output_path(tmp_path / "a" / "b.npz")
    ensure_output_path(tmp_path / "a" / "b.npz", force=True)
    with pytest.raises(OutputError, match="is a folder"):
        ensure_output_path(tmp_path / "a", force=True)
    with pytest.raises(OutputError, match="--report"):
        ensure_output_path(tmp_path / "a" / "b.npz" / "c.json", flag="--report")
