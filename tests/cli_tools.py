"""Helpers for testing the command line on bad input (used by test_bad_inputs.py; see its docstring).

- `run_cli(args)` runs `gzsq.cli.main(args)` in this process and returns a `CliResult`
  (code, out, err): fast, and monkeypatching works (e.g. to force a divergence or a Ctrl-C).
  `--help` (argparse's SystemExit) comes back as a code too.
- `run_cli_process(args)` runs `python -m gzsq.cli ARGS` as a real process (real signals,
  real stderr, warnings included); `start_cli_process` for tests that must signal it.
- `assert_one_line_error(result, *fragments, code=2)`: non-zero exit `code`, exactly one
  stderr line `gzsq: error: …` containing every fragment (case-insensitive), no traceback.
- `assert_nothing_at(*paths)`: no file at any path and no temp file of ours beside it
  (`.NAME.*.tmp`), i.e. nothing half-written was left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gzsq.cli import main

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


def run_cli(args: list[str]) -> CliResult:
    """`gzsq ARGS` in-process, with stdout and stderr captured (not terminals: no progress bars)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # --help / --version
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_cli_process(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gzsq.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), **kwargs)


def run_cli_process(args: list[str], timeout: float = 300) -> CliResult:
    proc = start_cli_process(args)
    out, err = proc.communicate(timeout=timeout)
    return CliResult(proc.returncode, out, err)


def assert_one_line_error(result: CliResult, *fragments: str, code: int = 2) -> str:
    """The contract for bad input: exit `code`, one `gzsq: error:` line on stderr naming the problem."""
    assert result.code == code, str(result)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, str(result)
    line = lines[0]
    assert line.startswith("gzsq: error: "), str(result)
    assert "Traceback" not in result.err, str(result)
    for fragment in fragments:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    return line


def assert_nothing_at(*paths: str | Path) -> None:
    for path in map(Path, paths):
        assert not path.exists(), f"{path} was left behind"
        if path.parent.is_dir():
            temps = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
            assert not temps, f"temp files left beside {path}: {temps}"
