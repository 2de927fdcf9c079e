"""Models gzsq knows by name, each carrying its input preprocessing."""

from .spec import InputSpec
from .zoo import available_models, load_model, read_checkpoint

__all__ = ["InputSpec", "available_models", "load_model", "read_checkpoint"]
