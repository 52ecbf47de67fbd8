"""`tf.train.Checkpoint` of a Keras 3 model and its optimizer.

Keras 3 layers are not fully tracked by TF's object-based checkpointing:
`tf.train.Checkpoint(model=model)` silently saves only variables attached
directly to the model (measured: 3 of 36 for `mnist_recall`), so a resumed run
would restart from fresh weights. We therefore checkpoint explicit variable
maps, keyed by position and path (`"007/encoder/dense_0/kernel"`), covering
every model variable — weights, learned memory, seed-generator states, the
non-finite-step marker — and every optimizer variable (step counter, Adam
moments). Restoring requires an exact match (`assert_consumed`), so a
checkpoint of another architecture fails loudly instead of half-restoring
(and every variable keeps its value).
"""

from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

from vma_tf.errors import CheckpointMismatchError
from vma_tf.workdir import numbered_checkpoints


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


def manifest(path: str) -> dict[str, list]:
    """`key -> [dtype name, shape]` of every value saved in checkpoint `path`
    (without TF's object-graph entry): what a resume must match."""
    reader = tf.train.load_checkpoint(path)
    dtypes = reader.get_variable_to_dtype_map()
    return {
        key: [dtypes[key].name, list(shape)]
        for key, shape in reader.get_variable_to_shape_map().items()
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def restore(checkpoint: tf.train.Checkpoint, path: str) -> None:
    """Restores every variable from `path`; raises on any mismatch.

    All or nothing: when the checkpoint does not match (another model, or
    unreadable files) every variable is put back to the value it had, so a
    caller that catches the error holds no half-restored model.
    """
    parts = [getattr(checkpoint, name, {}) for name in ("model", "optimizer")]
    variables = [v for part in parts for v in part.values()]
    before = [v.numpy() for v in variables]
    status = None
    try:
        status = checkpoint.restore(path)
        status.assert_consumed()
    except Exception as e:
        if status is not None:  # No warnings about its unused values at exit.
            status.expect_partial()
        for v, value in zip(variables, before):
            v.assign(value)
        if not isinstance(e, (AssertionError, ValueError)):
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match this model ({first[:200]})"
        ) from None


def newest(directory) -> str | None:
    """The newest checkpoint prefix of `directory` (None: none), from the
    `*.index` files: not TensorFlow's `checkpoint` state file, which may be
    missing or name a checkpoint that is gone."""
    paths = numbered_checkpoints(directory)
    return paths[0] if paths else None


def repair_state(directory) -> None:
    """Rewrites the `checkpoint` state file of `directory` from its `*.index`
    files when it is missing, unreadable or does not name the newest one.

    A `tf.train.CheckpointManager` reads that file when it is created: with
    it lost, the manager would not know the older checkpoints (so never
    delete them for `max_to_keep`).
    """
    paths = numbered_checkpoints(directory)
    if not paths:
        return
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except (ValueError, tf.errors.OpError):  # An empty or garbled file.
        state = None
    if state is not None and state.model_checkpoint_path.endswith(
        pathlib.Path(paths[0]).name
    ):
        return
    oldest_first = paths[::-1]
    tf.compat.v1.train.update_checkpoint_state(
        str(directory),
        paths[0],
        all_model_checkpoint_paths=oldest_first,
        # Times after the last "preserved" one (0), as the manager writes
        # them: else it would keep them all (`keep_checkpoint_every_n_hours`).
        all_model_checkpoint_timestamps=[
            pathlib.Path(f"{p}.index").stat().st_mtime for p in oldest_first
        ],
        last_preserved_timestamp=0.0,
    )


# What restoring a checkpoint whose files are truncated or garbage raises
# (IndexError: truncated data, "Read less bytes than requested").
UNREADABLE = (tf.errors.OpError, IndexError)


def unreadable_reason(error: Exception) -> str:
    """The first line of an `UNREADABLE` error, for a one-line warning."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def restore_newest_valid(checkpoint: tf.train.Checkpoint, directory, warn=print):
    """Restores the newest readable checkpoint of `directory`.

    A checkpoint whose files are truncated or garbage (TensorFlow raises a
    read error) is skipped with a warning naming it, and the next older one is
    tried. A checkpoint of another model is not skipped: that raises
    `CheckpointMismatchError` (the run's flags changed, not its files).

    Returns:
        The restored path, or None when `directory` holds no checkpoint.

    Raises:
        CheckpointMismatchError: mismatch, or no checkpoint could be read
            (never a silent start from scratch).
    """
    paths = numbered_checkpoints(directory)
    bad = []
    for path in paths:
        try:
            restore(checkpoint, path)
        except UNREADABLE as e:
            warn(
                f"warning: checkpoint {path} is unreadable ({unreadable_reason(e)}); "
                "trying the next older one"
            )
            bad.append(path)
            continue
        return path
    if bad:
        raise CheckpointMismatchError(
            f"no readable checkpoint in {directory} (unreadable: {', '.join(bad)}); "
            "move them away to start from scratch"
        )
    return None


def warm_start(model: keras.Model, run_dir) -> str:
    """Loads the model's weights from the newest checkpoint of `run_dir`.

    Every model variable but `model.run_state()` (the seed streams and the
    first non-finite step, which stay the new run's: its `--seed` seeds its
    samples). The optimizer is left as it is (fresh). Raises
    `CheckpointMismatchError` when `run_dir` has no checkpoint or its model
    variables differ from `model`'s (names or shapes). Returns the
    checkpoint path.
    """
    path = newest(pathlib.Path(run_dir).expanduser() / "checkpoints")
    if path is None:
        raise CheckpointMismatchError(f"--init_from={run_dir} has no checkpoint")
    own = {id(v) for v in model.run_state()}
    weights = _variable_map(model.variables, strip_scope=False)  # Keys by index.
    checkpoint = tf.train.Checkpoint(
        model={k: v for k, v in weights.items() if id(v) not in own}
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
