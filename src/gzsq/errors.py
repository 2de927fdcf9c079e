"""The one error family gzsq raises on bad input (one type to catch).

The CLI catches `GzsqError` only and prints its message as one line; anything
else escaping is a bug and keeps its traceback.
"""


class GzsqError(Exception):
    """Base of every error gzsq raises on purpose; the message is one line."""


class ConfigError(GzsqError, ValueError):
    """A setting is out of range or names something that does not exist."""


class ModelLoadError(GzsqError):
    """A model name, checkpoint or weights file cannot be loaded."""


class UnsupportedModelError(GzsqError):
    """The model holds a layer or op that a pipeline stage cannot handle."""


class DataError(GzsqError):
    """A dataset path is missing, unreadable or in an unknown format."""


class SourceNotApplicableError(GzsqError):
    """A calibration source cannot run on this model (e.g. zeroq without BN)."""


class DistillationDivergedError(GzsqError):
    """Distillation produced a NaN/Inf loss."""


class OutputError(GzsqError):
    """An output path already exists (without --force) or cannot be written."""


class RunInterrupted(GzsqError):
    """The user interrupted a run (Ctrl-C, SIGTERM); the message says what was kept and how to go on.

    The CLI exits 128 + the signal's number for it (130 for Ctrl-C), as shells do, not 2.
    """

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum
