"""Several processes, one job: torch.distributed under torchrun (docs/how-it-works.md §6).

`torchrun --nproc-per-node N -m gzsq distill|evaluate|quantize …` starts N copies of the command;
`init` joins them into one process group (gloo on CPU, nccl on CUDA; torchrun's environment variables
say where the others are, on one machine or several). What is split, and how the result stays the
one-process result up to float rounding:

- distillation: each rank optimizes its share of every batch of images; the per-channel statistics
  the loss compares are summed over all ranks, so every rank sees the loss of the whole batch, and
  the gradient on its own pixels is the one-process gradient.
- reconstruction: every rank draws the same batch indices and takes its share; gradients are summed.
- evaluation: whole batches go round-robin to the ranks; predictions are gathered, so counts are
  exactly the one-process counts.

Everything else (calibrating ranges, exporting, writing files) runs the same on every rank or on
rank 0 alone (`is_main`). In a single process every helper here is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

_solo = False  # inside `solo()`: act as a single process although a group exists


def launched() -> bool:
    """Started by torchrun (or another launcher setting WORLD_SIZE) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device | None = None) -> None:
    """Join the process group torchrun describes (once); a no-op for a single process."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    # rank 0 alone exports and writes while the others wait: give it hours, not the default 30 min
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=6))


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return not _solo and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that prints and writes outputs."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@contextlib.contextmanager
def solo():
    """Run the block as if alone (rank 0's export and evaluation while the others wait)."""
    global _solo
    before, _solo = _solo, True
    try:
        yield
    finally:
        _solo = before


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shard(n: int) -> slice:
    """This rank's contiguous share of n items (the first n mod size ranks take one more)."""
    base, extra = divmod(n, size())
    r = rank()
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def _on_backend(t: torch.Tensor) -> torch.Tensor:
    """nccl reduces CUDA tensors only: a CPU tensor travels through the rank's GPU."""
    if dist.get_backend() == "nccl" and t.device.type == "cpu":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (every rank gets the same bits)."""
    if active():
        moved = _on_backend(t)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        if moved is not t:
            t.copy_(moved)
    return t


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any (so that all ranks stop at the same step)."""
    if not active():
        return flag
    t = _on_backend(torch.tensor([1.0 if flag else 0.0]))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """The n rows whose `shard(n)` each rank holds, on every rank (exact: the others add zeros)."""
    if not active():
        return local
    full = torch.zeros((n,) + tuple(local.shape[1:]), dtype=local.dtype, device=local.device)
    full[shard(n)] = local
    return all_reduce_sum(full)


def my_batches(starts: list[int]) -> list[int]:
    """Round-robin share of whole batches (same batch boundaries as one process: same bits per image)."""
    return starts[rank()::size()]
