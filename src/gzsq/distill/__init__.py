"""Distillation: optimize images so a network's layer statistics match targets."""

from .loop import DistillConfig, Objective, distill_images

__all__ = ["DistillConfig", "Objective", "distill_images"]
