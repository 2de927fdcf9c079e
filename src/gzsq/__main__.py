"""`python -m gzsq …` (what torchrun starts: `torchrun --nproc-per-node 2 -m gzsq distill …`)."""

from .cli import entry

entry()
