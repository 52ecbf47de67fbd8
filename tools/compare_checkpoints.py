"""Bit-exact comparison of two checkpoints' variables.

  python tools/compare_checkpoints.py RUN_OR_CKPT_A RUN_OR_CKPT_B

A run directory means its newest checkpoint. Compares every variable except
the save counter and the serialized object graph (`SKIP`). Prints one line
per differing variable and a summary line; exits 0 only if both hold the same variables
with bit-equal values. Used to show that a run resumed on other code ends
where an uninterrupted run ends (BUILD.md, "Checkpoints across refactors").
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import tensorflow as tf

# Not training state: the save counter counts saves, and the serialized
# object graph is metadata (its bytes may differ between code versions that
# save the same variables under the same keys; tests/golden pins the keys).
SKIP = {"save_counter/.ATTRIBUTES/VARIABLE_VALUE", "_CHECKPOINTABLE_OBJECT_GRAPH"}


def resolve(path: str) -> str:
    """A checkpoint prefix: `path` itself, or the newest one of a run."""
    run = pathlib.Path(path).expanduser() / "checkpoints"
    if run.is_dir():
        latest = tf.train.latest_checkpoint(str(run))
        if latest is None:
            sys.exit(f"error: {run} has no checkpoint")
        return latest
    return path


def compare(a: str, b: str) -> list[str]:
    """Names of the variables that differ or exist in one checkpoint only."""
    names_a = {n for n, _ in tf.train.list_variables(a)} - SKIP
    names_b = {n for n, _ in tf.train.list_variables(b)} - SKIP
    differ = sorted(names_a ^ names_b)
    for name in sorted(names_a & names_b):
        u = np.asarray(tf.train.load_variable(a, name))
        v = np.asarray(tf.train.load_variable(b, name))
        if u.shape != v.shape or u.dtype != v.dtype or u.tobytes() != v.tobytes():
            differ.append(name)
    return differ


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    a, b = resolve(argv[1]), resolve(argv[2])
    differ = compare(a, b)
    for name in differ:
        print(f"differs: {name}")
    count = len({n for n, _ in tf.train.list_variables(a)} - SKIP)
    verdict = "bit-equal" if not differ else f"{len(differ)} differ"
    print(f"{a} vs {b}: {count} variables, {verdict}")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
