"""Shared launcher helpers: one-line errors (no TensorFlow import)."""

from __future__ import annotations

import sys
from typing import NoReturn


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
