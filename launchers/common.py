"""Shared launcher helpers: one-line errors (no TensorFlow import at module
level) and a quiet TensorFlow start."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import NoReturn

# TensorFlow's native start-up notices on a CPU-only machine. They are
# written straight to file descriptor 2 before absl::InitializeLog(), so
# TF_CPP_MIN_LOG_LEVEL does not filter them (measured with TF 2.21).
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
)


def fail(message: str) -> NoReturn:
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run(main, flags_parser=parse_flags)`: a flag that does not parse
    (unknown name, wrong type, value outside an enum) is one `error:` line and
    exit 2, like every other bad input (absl's default prints two lines and
    exits 1)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(" ".join(str(e).split()))


def check_common(argv, workdir: str | None, what: str) -> None:
    """Rejects positional arguments and a missing `--workdir`."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    if not workdir:
        fail(f"--workdir is required ({what})")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and finds its devices with file descriptor 2
    captured, then writes back every captured line except the known
    start-up notices (`_STARTUP_NOISE`): a CPU-only start prints nothing, and
    anything else TensorFlow says still reaches stderr. TF's Python logger
    is set to WARNING. `VMA_TF_LOGS=1` keeps every line and INFO."""
    if os.environ.get("VMA_TF_LOGS") == "1" or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    from absl import logging as absl_logging

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            # TF's Python INFO lines (e.g. absl's "Sharding callback
            # duration" on every checkpoint) would break into the progress bar.
            tf.get_logger().setLevel("WARNING")
            absl_logging.set_verbosity(absl_logging.WARNING)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            for line in text.splitlines(keepends=True):
                if not any(noise in line for noise in _STARTUP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()
