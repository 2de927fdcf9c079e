"""Models gzsq knows by name, each carrying its input preprocessing."""

from .spec import InputSpec
from .validate import validate_model
from .zoo import available_models, load_model, read_checkpoint

__all__ = ["InputSpec", "available_models", "load_model", "read_checkpoint", "validate_model"]
