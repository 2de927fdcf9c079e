"""Distillation: optimize images so a network's layer statistics match targets."""

from ..config import DistillConfig
from .checkpoint import Checkpoint
from .loop import Objective, distill_images

__all__ = ["Checkpoint", "DistillConfig", "Objective", "distill_images"]
