"""`train_and_evaluate(config, workdir)`: the resumable training job.

Workdir layout:

  config.json      the resolved `Config` (a resumed run must match it, except
                   for the fields in `configs.RESUMABLE_FIELDS`)
  metrics.jsonl    one JSON object per line: split, step, loss, nll_bound,
                   kl_a, kl_z, recon, steps_per_sec (train: optimiser steps/s
                   over the interval; eval: evaluation batches/s), wall_time
  checkpoints/     `tf.train.CheckpointManager` checkpoints of the model
                   (weights, learned memory, seed-generator states, step
                   counter) and the optimizer state
  tb/              TensorBoard scalars and sample grids
  samples.png      samples at the end of training
  summary.json     final numbers

Rerunning the same command resumes from the latest checkpoint. Training data
are a pure function of (seed, step) (see `vma_tf.data.pipelines`), so the data
position is restored with the step counter.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from vma_tf import checkpointing, plotting
from vma_tf.configs import Config
from vma_tf.data.experiments import make_data
from vma_tf.errors import NonFiniteError
from vma_tf.workdir import atomic_write, preflight, workdir_lock
from vma_tf.modeling.builders import build_model as build_network
from vma_tf.modeling.models import (
    METRIC_NAMES,
    VMA,
    LatentVariableModel,
    SoftAttentionVAE,
)


# -- metrics ------------------------------------------------------------------


class MetricsLog:
    """Appends JSON lines to metrics.jsonl and scalars to TensorBoard."""

    def __init__(self, workdir: pathlib.Path, start_step: int):
        self.path = workdir / "metrics.jsonl"
        if self.path.exists():  # Drop lines past the checkpoint we resume from.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= start_step
            ]
            atomic_write(self.path, "".join(k + "\n" for k in kept))
        self.writer = tf.summary.create_file_writer(str(workdir / "tb"))

    def write(
        self, split: str, step: int, values: dict[str, float], steps_per_sec: float
    ) -> dict[str, Any]:
        record = {
            "split": split,
            "step": int(step),
            **{k: float(values[k]) for k in METRIC_NAMES},
            "steps_per_sec": float(steps_per_sec),
            "wall_time": time.time(),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=int(step)):
            for k in METRIC_NAMES:
                tf.summary.scalar(f"{split}/{k}", record[k])
            tf.summary.scalar(f"{split}/steps_per_sec", steps_per_sec)
        return record

    def image(self, name: str, step: int, grid: np.ndarray) -> None:
        with self.writer.as_default(step=int(step)):
            tf.summary.image(name, grid[np.newaxis, ..., np.newaxis])
        self.writer.flush()


# -- model assembly -----------------------------------------------------------


def build_model(config: Config, x_shape, example_batch) -> LatentVariableModel:
    """Builds, compiles and creates the variables of the model (and optimizer).

    Args:
        config: validated config.
        x_shape: shape of one example.
        example_batch: a training batch, used to create variables eagerly.

    Returns:
        The compiled model, `jit_compile` set explicitly from `config.train.jit`.
    """
    keras.utils.set_random_seed(config.train.seed)
    model = build_network(config.model, x_shape, seed=config.train.seed)
    model.compute_terms(
        example_batch["x"],
        example_batch.get("memory"),
        config.model.num_samples,
        seed=(0, 0),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.learning_rate),
        jit_compile=config.train.jit,
    )
    model.optimizer.build(model.trainable_variables)
    return model


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


# -- the training loop --------------------------------------------------------


class _Monitor(keras.callbacks.Callback):
    """Logging, evaluation, checkpoints, progress bar and NaN guard."""

    def __init__(
        self,
        config: Config,
        log: MetricsLog,
        manager,
        evals,
        start_step: int,
        sample_fn,
        progress: bool,
    ):
        super().__init__()
        self.config = config
        self.log = log
        self.manager = manager
        self.evals = evals
        self.sample_fn = sample_fn
        self.history: list[dict[str, Any]] = []
        t = config.train
        self.progbar = (
            keras.utils.Progbar(
                t.steps - start_step,
                unit_name="step",
                stateful_metrics=["step", "nll_bound", "kl_a"],
            )
            if progress
            else None
        )
        self._t0 = time.perf_counter()
        self._start_step = start_step

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        t = self.config.train
        elapsed = time.perf_counter() - self._t0
        step = self._step()
        bad = int(self.model.first_nonfinite_step.numpy())
        if bad >= 0 or not all(math.isfinite(float(logs[k])) for k in METRIC_NAMES):
            bad_step = bad if bad >= 0 else step
            last = self.manager.latest_checkpoint or "none"
            raise NonFiniteError(
                f"non-finite loss or gradient at step {bad_step}; training "
                f"stopped, last good checkpoint: {last}"
            )
        record = self.log.write("train", step, logs, t.log_every / elapsed)
        self.history.append(record)
        if step % t.eval_every == 0 or step >= t.steps:
            self.history.extend(evaluate(self.model, self.evals, step, self.log))
            self.log.image("samples", step, plotting.tile(self.sample_fn()))
        if step % t.checkpoint_every == 0 or step >= t.steps:
            self.manager.save(checkpoint_number=step)
        if self.progbar is not None:
            self.progbar.update(
                step - self._start_step,
                values=[
                    ("step", step),
                    ("nll_bound", float(logs["nll_bound"])),
                    ("kl_a", float(logs["kl_a"])),
                ],
            )


def evaluate(
    model: LatentVariableModel,
    evals: dict[str, tf.data.Dataset],
    step: int,
    log: MetricsLog | None = None,
) -> list[dict[str, Any]]:
    """Runs `test_step` over each eval set (fixed eval seed); logs each split."""
    records = []
    for split, ds in evals.items():
        model.reset_eval_seed()
        t0 = time.perf_counter()
        values = model.evaluate(ds, verbose=0, return_dict=True)
        rate = _num_batches(ds) / (time.perf_counter() - t0)
        if log is not None:
            records.append(log.write(split, step, values, rate))
        else:
            records.append({"split": split, "step": step, **values})
    return records


def _num_batches(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    return n if n > 0 else 1


def train_and_evaluate(
    config: Config, workdir: str | os.PathLike, progress: bool = True
) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint).

    Args:
        config: experiment config; validated here.
        workdir: run directory (created if missing).
        progress: show a progress bar.

    Returns:
        Summary dict: final step, wall time, steps/s, last train/valid/test
        metrics, paths.

    Raises:
        ConfigError: bad config or workdir (nothing written).
        vma_tf.data.files.DataError: missing or corrupt data (nothing written).
        NonFiniteError: NaN/Inf in training (last good checkpoint kept).
    """
    workdir = preflight(config, workdir)
    data = make_data(config)
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir):
        atomic_write(workdir / "config.json", config.to_json() + "\n")
        return _train(config, workdir, data, progress)


def _train(config: Config, workdir: pathlib.Path, data, progress: bool):
    t = config.train
    example = data.make_batch(tf.constant(0, tf.int64))
    model = build_model(config, data.x_shape, example)
    checkpoint = checkpointing.make_checkpoint(model)
    manager = tf.train.CheckpointManager(
        checkpoint, workdir / "checkpoints", max_to_keep=t.keep_checkpoints
    )
    if manager.latest_checkpoint:
        checkpointing.restore(checkpoint, manager.latest_checkpoint)
    elif t.init_from:
        source = checkpointing.warm_start(model, t.init_from)
        print(f"Warm start: model weights from {source}")
    start_step = int(model.optimizer.iterations.numpy())
    if start_step:
        print(f"Resuming from {manager.latest_checkpoint} at step {start_step}")
    log = MetricsLog(workdir, start_step)
    memory = None if data.sample_memory is None else tf.constant(data.sample_memory)
    x_hw = data.x_shape[:2] if len(data.x_shape) == 3 else (28, 28)
    sample_fn = lambda: sample_grid(model, memory, 8, 10, t.seed, x_hw)
    monitor = _Monitor(
        config, log, manager, data.evals, start_step, sample_fn, progress
    )
    t0 = time.perf_counter()
    if start_step < t.steps:
        model.fit(
            data.train(start_step),
            epochs=t.steps // t.log_every,
            initial_epoch=start_step // t.log_every,
            steps_per_epoch=t.log_every,
            callbacks=[monitor],
            verbose=0,
            shuffle=False,
        )
    wall = time.perf_counter() - t0
    final = evaluate(model, data.final_evals, int(model.optimizer.iterations), log)
    grid = sample_fn()
    plotting.save_grid(
        workdir / "samples.png",
        grid,
        title=f"{config.name}: samples (rows share m_a)"
        if isinstance(model, VMA)
        else f"{config.name}: samples",
    )
    step = int(model.optimizer.iterations.numpy())
    trained = step - start_step
    last = {}
    for rec in monitor.history + final:
        last[rec["split"]] = {k: rec[k] for k in METRIC_NAMES}
    summary = {
        "name": config.name,
        "workdir": str(workdir),
        "step": step,
        "steps_this_run": trained,
        "wall_time_sec": wall,
        "steps_per_sec": trained / wall if trained else None,
        "metrics": last,
        "samples_png": str(workdir / "samples.png"),
    }
    atomic_write(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.writer.flush()
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable table of a `train_and_evaluate` summary."""
    lines = [
        f"{summary['name']} @ step {summary['step']} "
        f"({summary['steps_this_run']} steps this run, "
        f"{summary['wall_time_sec']:.1f} s"
        + (
            f", {summary['steps_per_sec']:.1f} steps/s)"
            if summary["steps_per_sec"]
            else ")"
        ),
        f"{'split':<16}" + "".join(f"{k:>11}" for k in METRIC_NAMES[1:]),
    ]
    for split, values in summary["metrics"].items():
        lines.append(
            f"{split:<16}" + "".join(f"{values[k]:>11.3f}" for k in METRIC_NAMES[1:])
        )
    lines.append(f"samples: {summary['samples_png']}")
    return "\n".join(lines)
