"""Checkpoints of a distillation run: save its state every K steps, resume it to the same images.

The state (torch.save of tensors and plain values, read back weights-only) is
written atomically. A checkpoint is keyed: the caller's description of the run
plus n, shape, seed, the recipe and a hash of the targets, so a checkpoint never
leaks into a run it was not made by; and every field of a checkpoint whose key
matches is checked before it is trusted (a damaged file is a one-line error).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes
from ..errors import ConfigError


@dataclass(frozen=True)
class Checkpoint:
    """Where `distill_images` saves its state every `every` iterations so an interrupted run can resume.

    The file (torch.save of tensors and plain values, read back weights-only) is
    written atomically; the caller removes it once the result is safely stored.
    With `resume`, an existing file is continued instead of started over — and
    refused if it belongs to another run: `key` is the caller's description of
    the run (model, weights, source, ...); the loop adds n, shape, seed, the
    recipe and a hash of the targets, so a checkpoint never leaks into a run it
    was not made by. A resumed run gives the very same images as an
    uninterrupted one (the optimizer, scheduler and RNG states are restored).
    """

    path: str
    every: int = 10
    resume: bool = False
    key: str = ""

    def __post_init__(self):
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"checkpoint interval must be a positive number of iterations, got {self.every!r}")


_CHECKPOINT_FORMAT = "gzsq-distill-checkpoint/1"


def run_key(checkpoint: Checkpoint, objective, n: int, shape, config, seed: int,
             num_classes) -> str:
    h = hashlib.sha256()
    h.update(repr((checkpoint.key, n, tuple(shape), config, seed, num_classes, objective.read_input)).encode())
    if objective.local_rule is not None:  # local targets: the same listed targets, another objective
        h.update(b"local targets" if objective.local_batches is None else f"local targets in {objective.local_batches} batches".encode())
    for name, (mu, sigma) in objective.targets.items():
        h.update(name.encode())
        h.update(mu.detach().float().contiguous().numpy().tobytes())
        h.update(sigma.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_checkpoint(checkpoint: Checkpoint, key: str) -> dict | None:
    """The saved state of this run, or None when there is none to resume."""
    path = Path(checkpoint.path)
    if not (checkpoint.resume and path.exists()):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(state, dict) and state.get("format") == _CHECKPOINT_FORMAT
    except Exception:
        raise damaged(path) from None
    if not ok:
        raise damaged(path)
    if state.get("key") != key:
        raise ConfigError(f"{path} is the checkpoint of a different run (model, weights, settings, n or seed "
                          "differ); delete it, or resume with the same command")
    return state


def damaged(path) -> ConfigError:
    return ConfigError(f"cannot resume from {path}: it is damaged or not a gzsq distillation checkpoint; "
                       "delete it to start over")


def check_state(state: dict, sizes: list[int], kept: list[int], shape, steps: list[int], path) -> None:
    """A checkpoint whose key matches can still be damaged; check every field before trusting it.

    sizes[b]: images optimized in batch b; kept[b]: how many of them the batch contributes; steps[b]: its
    iterations.
    """
    def tensor(t, dims, dtype=torch.float32):
        return isinstance(t, torch.Tensor) and t.dtype == dtype and tuple(t.shape) == tuple(dims)

    def numbers(xs, length):
        return isinstance(xs, list) and len(xs) == length and all(isinstance(v, float) for v in xs)

    try:
        b, it = state["batch"], state["it"]
        ok = (type(b) is int and type(it) is int and 0 <= b < len(sizes) and 0 <= it < steps[b]
              and isinstance(state["batches"], list) and len(state["batches"]) == b
              and all(tensor(t, (kept[i],) + tuple(shape)) for i, t in enumerate(state["batches"]))
              and isinstance(state["curves"], list) and len(state["curves"]) == b
              and all(isinstance(c, list) and 1 <= len(c) <= steps[i] and numbers(c, len(c))
                      for i, c in enumerate(state["curves"]))
              and state["iters_run"] == [len(c) for c in state["curves"]]
              and isinstance(state["gen"], torch.Tensor) and state["gen"].dtype == torch.uint8
              and isinstance(state["seconds"], float))
        if ok and state["x"] is None:
            ok = it == 0 and all(state[k] is None for k in ("labels", "opt", "sched", "best", "since_best", "curve"))
        elif ok:
            ok = (tensor(state["x"], (sizes[b],) + tuple(shape)) and tensor(state["labels"], (sizes[b],), torch.int64)
                  and isinstance(state["opt"], dict) and isinstance(state["sched"], dict)
                  and isinstance(state["best"], float) and type(state["since_best"]) is int
                  and numbers(state["curve"], it) and it > 0)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise damaged(path)


def check_adam(opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    """Adam's restored moments must match the images they belong to (load_state_dict does not check)."""
    state = opt.state[x] if x in opt.state else {}
    for k in ("exp_avg", "exp_avg_sq"):
        if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != x.shape):
            raise ValueError(k)
    if "step" in state and not (isinstance(state["step"], torch.Tensor) and state["step"].numel() == 1):
        raise ValueError("step")


def save_checkpoint(checkpoint: Checkpoint, state: dict) -> None:
    # Not interruptible: the state saved when a signal arrives is the one --resume needs.
    atomic_write_bytes(checkpoint.path, lambda f: torch.save({"format": _CHECKPOINT_FORMAT, **state}, f),
                       interruptible=False)
