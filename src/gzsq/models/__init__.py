"""Models gzsq knows by name, each carrying its input preprocessing."""

from .spec import InputSpec
from .validate import validate_model
from .checkpoint import read_checkpoint
from .zoo import available_models, load_model

__all__ = ["InputSpec", "available_models", "load_model", "read_checkpoint", "validate_model"]
