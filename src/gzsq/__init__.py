"""gzsq: data-free quantization of trained CNNs from their weights' statistics."""

__version__ = "0.1.0"
