"""Shared launcher helpers: one-line errors (no TensorFlow import)."""

from __future__ import annotations

import sys
from typing import NoReturn


def fail(message: str) -> NoReturn:
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_common(argv, workdir: str | None, what: str) -> None:
    """Rejects positional arguments and a missing `--workdir`."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    if not workdir:
        fail(f"--workdir is required ({what})")
