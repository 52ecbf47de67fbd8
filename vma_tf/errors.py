"""Errors with one-line messages that launchers print as `error: ...`.

No TensorFlow import here, so launchers can catch them before importing TF.
"""

from vma_tf.configs import ConfigError


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN/Inf; names the step."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training after checkpointing the current
    step; `exit_code` is the shell's `128 + signal number`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class WorkdirError(ConfigError):
    """The workdir cannot be used (unwritable, locked, or another run's)."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint does not hold exactly this model's variables."""


class ExportError(ConfigError):
    """The export cannot be written (e.g. the version exists). One line."""


__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "ExportError",
    "Interrupted",
    "NonFiniteError",
    "WorkdirError",
]
