"""The experiment layer: what training, evaluation, export, tuning and
benchmarks share.

* `build_model(config, x_shape, example_batch)`: the compiled model with its
  variables (and optimizer slots) created, ready to restore or train.
* `load_run(workdir)`: the config, restored model, data and step of a run.
* `sample_grid(model, memory, rows, cols, seed)`: sample images for figures.
"""

from __future__ import annotations

import pathlib
import sys

import keras
import numpy as np
import tensorflow as tf

from vma_tf import checkpointing
from vma_tf.configs import Config
from vma_tf.data.experiments import make_data
from vma_tf.errors import WorkdirError
from vma_tf.workdir import read_config
from vma_tf.modeling.builders import build_model as build_network
from vma_tf.modeling.builders import dtype_policy_scope
from vma_tf.modeling.models import VMA, LatentVariableModel, SoftAttentionVAE
from vma_tf.modeling.nonfinite import NonFiniteGuard


def use_jit(config: Config) -> bool:
    """`config.train.jit`, except under a strategy with several replicas.

    Keras compiles the whole `strategy.run(train_step)` with XLA; with several
    replicas that fails (measured, TF 2.21 CPU): `mirrored` with 2 devices
    "Trying to access resource .../replica_1 located in device CPU:1 from
    device CPU:0" (https://www.tensorflow.org/xla/known_issues), and
    `multi_worker` "Collectives are not yet implemented for CPU devices when
    compiling with XLA". XLA is therefore switched off with several
    replicas, with a logged message (see BUILD.md).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if config.train.jit and replicas > 1:
        print(
            f"XLA off: --jit is not supported with {replicas} replicas "
            f"(--strategy={config.train.strategy}); steps run as TF graphs"
        )
        return False
    return config.train.jit


def build_model(
    config: Config, x_shape, example_batch, pixel_mean=None
) -> LatentVariableModel:
    """Builds, compiles and creates the variables of the model (and optimizer).

    Args:
        config: validated config.
        x_shape: shape of one example.
        example_batch: a training batch, used to create variables eagerly.
        pixel_mean: training-set pixel means (the `"data_mean"` decoder bias
            of a fresh model; not needed when weights are restored next).

    Returns:
        The compiled model, `jit_compile` set explicitly by `use_jit(config)`.
    """
    keras.utils.set_random_seed(config.train.seed)
    model = build_network(
        config.model, x_shape, seed=config.train.seed, pixel_mean=pixel_mean
    )
    model.compute_terms(
        example_batch["x"],
        example_batch.get("memory"),
        config.model.num_samples,
        seed=(0, 0),
    )
    model.compile(
        optimizer=NonFiniteGuard(
            keras.optimizers.Adam(config.train.learning_rate),
            model.first_nonfinite_step,
            skip_nonfinite=config.train.skip_nonfinite,
        ),
        jit_compile=use_jit(config),
    )
    model.optimizer.build(model.trainable_variables)
    if tf.distribute.has_strategy():
        # Every variable exists now. Keras' pre-fit "symbolic build" under a
        # strategy reduces one dict batch across replicas, which
        # MultiWorkerMirroredStrategy rejects ("Attempt to convert a value
        # ({'x': PerReplica...}) with an unsupported type (<class 'dict'>)").
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    strategy = tf.distribute.get_strategy()
    if (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.num_replicas_in_sync > 1
    ):  # One worker: Keras passes the outputs through, scalars as they are.
        _vectorize_step_outputs(model)
    return model


def load_run(workdir, dtype_policy: str | None = None):
    """Rebuilds the model of a training workdir from its newest checkpoint.

    Args:
        workdir: a directory written by `train_and_evaluate`.
        dtype_policy: build the model under this Keras dtype policy (e.g.
            `"mixed_bfloat16"`: bfloat16 networks, float32 variables and
            log-probabilities; see `LatentVariableModel.head_dtype`); None
            keeps the global policy. Checkpoints are the same either way.

    Returns:
        `(config, model, data, step)`.

    Raises:
        vma_tf.errors.WorkdirError: no config or no checkpoint in `workdir`.
        vma_tf.errors.CheckpointMismatchError: no checkpoint is readable, or
            they are of another model.
    """
    workdir = pathlib.Path(workdir).expanduser()
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise WorkdirError(f"--workdir={workdir} has no config.json (not a run)")
    _, config = read_config(config_path)
    directory = workdir / "checkpoints"
    if checkpointing.newest(directory) is None:
        raise WorkdirError(f"--workdir={workdir} has no checkpoint yet")
    data = make_data(config)
    with dtype_policy_scope(dtype_policy):
        batch = data.make_batch(tf.constant(0, tf.int64))
        model = build_model(config, data.x_shape, batch)
    # As a resumed run does: an unreadable newest checkpoint is skipped with
    # a warning (the step returned is the one restored).
    checkpointing.restore_newest_valid(
        checkpointing.make_checkpoint(model),
        directory,
        warn=lambda message: print(message, file=sys.stderr),
    )
    return config, model, data, int(model.optimizer.iterations.numpy())


def _vectorize_step_outputs(model: LatentVariableModel) -> None:
    """Makes `train_step` / `test_step` return `[1]` metrics, not scalars.

    Keras reduces the per-replica step outputs of a multi-worker strategy
    with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars
    ("Invalid reduction dimension 0 for input with 0 dimensions"). The epoch
    logs `_Monitor` and `evaluate` see are read from the metric trackers
    (aggregated over all replicas), not from these outputs.
    """
    expand = lambda logs: {k: tf.reshape(v, [1]) for k, v in logs.items()}
    train_step, test_step = model.train_step, model.test_step
    model.train_step = lambda data: expand(train_step(data))
    model.test_step = lambda data: expand(test_step(data))


def sample_grid(
    model: LatentVariableModel, memory, rows: int, cols: int, seed: int, x_hw=(28, 28)
) -> np.ndarray:
    """Sample images `[rows, cols, H, W]`; for VMA each row shares one m_a.

    With episodic memory the first column shows the memory entry m_a itself
    (paper Fig. 2B); with learned memory all columns are samples.
    """
    seeds = tf.random.experimental.stateless_split(tf.constant([seed, 7]), 2)
    if isinstance(model, VMA):
        addr = model.sample_prior_addresses(rows, memory, seed=seeds[0])
        per_row = cols - 1 if memory is not None else cols
        images = model.sample(tf.repeat(addr, per_row), memory, seed=seeds[1])
        images = tf.reshape(images, [rows, per_row, *x_hw]).numpy()
        if memory is not None:
            entries = tf.reshape(tf.gather(memory, addr), [rows, 1, *x_hw])
            images = np.concatenate([entries.numpy(), images], axis=1)
        return images
    if isinstance(model, SoftAttentionVAE):
        images = model.sample(rows * cols, memory, seed=seeds[0])
    else:
        images = model.sample(rows * cols, seed=seeds[0])
    return tf.reshape(images, [rows, cols, *x_hw]).numpy()


def samples_title(name: str, model, memory) -> str:
    """Title of samples.png, saying what `sample_grid`'s columns are."""
    if not isinstance(model, VMA):
        return f"{name}: samples"
    if memory is None:
        return f"{name}: samples (rows share m_a)"
    return f"{name}: first column m_a, then samples of p(x|m_a)"
