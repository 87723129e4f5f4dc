"""User-facing errors.

Anything a user can cause (a bad path, a typo in a config key, a corrupt image) raises a
:class:`SelfsupError`. The CLI prints its message as one line and exits non-zero; only
``--debug`` shows the traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class SelfsupError(Exception):
    """An error caused by input the user controls; its message is one self-contained line."""


class ConfigError(SelfsupError):
    """A config key or value is unknown, mistyped or out of range."""


class DataError(SelfsupError):
    """A dataset is missing, empty, corrupt or unreadable."""


class RunDirError(SelfsupError):
    """A run directory is missing, not a run, or would be overwritten."""


class CheckpointError(SelfsupError):
    """A checkpoint is missing, corrupt or unsafe to load."""


class TrainingDivergedError(SelfsupError):
    """The loss became NaN or infinite."""


class MissingExtraError(SelfsupError):
    """A feature needs a package of an optional extra that is not installed."""
