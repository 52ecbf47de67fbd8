"""`tf.train.Checkpoint` of a Keras 3 model and its optimizer.

Keras 3 layers are not fully tracked by TF's object-based checkpointing:
`tf.train.Checkpoint(model=model)` silently saves only variables attached
directly to the model (measured: 3 of 36 for `mnist_recall`), so a resumed run
would restart from fresh weights. We therefore checkpoint explicit variable
maps, keyed by position and path (`"007/encoder/dense_0/kernel"`), covering
every model variable — weights, learned memory, seed-generator states, the
non-finite-step marker — and every optimizer variable (step counter, Adam
moments). Restoring requires an exact match (`assert_consumed`), so a
checkpoint of another architecture fails loudly instead of half-restoring.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vma_tf.errors import CheckpointMismatchError


def _variable_map(variables, strip_scope: bool) -> dict[str, tf.Variable]:
    out = {}
    for i, v in enumerate(variables):
        path = v.path
        if strip_scope and "/" in path:  # "adam_3/iteration" -> "iteration"
            path = path.split("/", 1)[1]
        out[f"{i:03d}/{path}"] = v
    return out


def make_checkpoint(model: keras.Model) -> tf.train.Checkpoint:
    """Checkpoint of all variables of a built model and its built optimizer."""
    return tf.train.Checkpoint(
        model=_variable_map(model.variables, strip_scope=False),
        optimizer=_variable_map(model.optimizer.variables, strip_scope=True),
    )


def restore(checkpoint: tf.train.Checkpoint, path: str) -> None:
    """Restores every variable from `path`; raises on any mismatch."""
    try:
        checkpoint.restore(path).assert_consumed()
    except (AssertionError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match this model ({first[:200]})"
        ) from None


def warm_start(model: keras.Model, run_dir) -> str:
    """Loads every model variable from the newest checkpoint of `run_dir`.

    The optimizer is left as it is (fresh). Raises `CheckpointMismatchError`
    when `run_dir` has no checkpoint or its model variables differ from
    `model`'s (names or shapes). Returns the checkpoint path.
    """
    import pathlib

    path = tf.train.latest_checkpoint(
        str(pathlib.Path(run_dir).expanduser() / "checkpoints")
    )
    if path is None:
        raise CheckpointMismatchError(f"--init_from={run_dir} has no checkpoint")
    checkpoint = tf.train.Checkpoint(
        model=_variable_map(model.variables, strip_scope=False)
    )
    try:
        checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointMismatchError(
            f"--init_from={run_dir}: checkpoint {path} does not match this "
            f"model ({first[:200]})"
        ) from None
    return path
