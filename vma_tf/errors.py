"""Errors with one-line messages that launchers print as `error: ...`.

No TensorFlow import here, so launchers can catch them before importing TF.
"""

from vma_tf.configs import ConfigError


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN/Inf; names the step."""


class WorkdirError(ConfigError):
    """The workdir cannot be used (unwritable, locked, or another run's)."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint does not hold exactly this model's variables."""


__all__ = ["CheckpointMismatchError", "ConfigError", "NonFiniteError", "WorkdirError"]
