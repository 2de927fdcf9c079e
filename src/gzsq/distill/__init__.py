"""Distillation: optimize images so a network's layer statistics match targets."""

from .loop import Checkpoint, DistillConfig, Objective, distill_images

__all__ = ["Checkpoint", "DistillConfig", "Objective", "distill_images"]
