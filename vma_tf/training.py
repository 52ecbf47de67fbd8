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
position is restored with the step counter. Rerunning a run that has ended
(its `summary.json` written at its last checkpoint's step, nothing left to
train) changes nothing and returns the stored summary.

Distributed training (`config.train.strategy`, see `distribution.make_strategy`): the model
is built under the strategy's scope, `batch_size` is the global batch, each
replica gets `batch_size / replicas` targets of the same global batch and the
whole (shared) memory (`distribute`). Every worker trains, evaluates and saves
checkpoints (collectives need all of them), but only the chief writes into the
workdir; other workers write into a temporary directory deleted at the end,
and resume from the chief's `checkpoints/` (a filesystem shared by all
workers).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from vma_tf import address_health, checkpointing, distribution, plotting
from vma_tf import time_to_quality as ttq
from vma_tf.configs import Config
from vma_tf.data.experiments import make_data
from vma_tf.errors import ConfigError, Interrupted, NonFiniteError
from vma_tf.experiment import build_model, sample_grid, samples_title
from vma_tf.metrics_log import MetricsLog
from vma_tf.modeling.builders import dtype_policy_scope
from vma_tf.modeling.models import (
    METRIC_NAMES,
    LatentVariableModel,
)
from vma_tf.workdir import (
    atomic_write,
    preflight,
    read_summary,
    step_of,
    workdir_lock,
)

# An evaluation whose mean KL(q(z|x, m_a) || p(z|m_a)) is below this (nats)
# prints `unused_z_warning`: z carries almost nothing about the target.
UNUSED_Z_MAX_KL = 0.05


def unused_z_warning(split: str, step: int, kl_z: float) -> str:
    """The one-line warning printed when an evaluation's `kl_z` is below
    `UNUSED_Z_MAX_KL` (a task where z should code something)."""
    return (
        f"WARNING: z unused at step {step} ({split}): KL of z = {kl_z:.3f} nats, "
        "the decoder ignores z (posterior collapse; it may not recover: "
        'README "Known gaps")'
    )


# -- the training loop --------------------------------------------------------


class _Monitor(keras.callbacks.Callback):
    """Logging, evaluation, checkpoints, progress bar, NaN guard, the stop
    on SIGINT / SIGTERM (`signal`, set by `_checkpoint_on_signals`) and the
    early stop asked by `stop_when` (`stopped`).

    A train row's `steps_per_sec` is the interval's steps over its wall time
    less the time the process spent stopped (`kill -STOP` ... `kill -CONT`,
    as long runs are while CI runs): `resumed`, called on SIGCONT, counts
    the time since the last finished step as paused (to within one step)."""

    signal: int | None = None
    # Under multi_worker: `signal number or 0 -> the largest over workers`, a
    # collective every worker calls at the same points (set by
    # `_checkpoint_on_signals`), so that all stop at the same step.
    any_worker: Callable[[int], int] | None = None
    from_peer = False  # The signal reached another worker, not this one.

    def __init__(
        self,
        config: Config,
        log: MetricsLog,
        manager,
        evals,
        start_step: int,
        sample_fn,
        progress: bool,
        stop_when: Callable[[list[dict[str, Any]]], bool] | None = None,
    ):
        super().__init__()
        self.config = config
        self.stop_when = stop_when
        self.stopped = False
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
                stateful_metrics=["nll_bound", "kl_a"],
            )
            if progress
            else None
        )
        self._t0 = self._last_end = time.perf_counter()
        self._paused = 0.0
        self._start_step = self._epoch_start = start_step
        # The step of the newest checkpoint known good: the restored one, then
        # each saved. Not the manager's `latest_checkpoint`, which still names
        # an unreadable newest checkpoint the restore fell back from.
        self._saved_step = start_step or None

    def on_train_batch_end(self, batch, logs=None):
        self._last_end = time.perf_counter()
        # A signal in an interval's last step is acted on by `on_epoch_end`,
        # after that step's evaluation and patience check (as an
        # uninterrupted run has them); every worker skips the same batch.
        if batch + 1 < self.params["steps"] and self._signalled():
            self._stop(logs)

    def _signalled(self) -> bool:
        """Whether to stop for a signal: this process's, or under
        multi_worker any worker's (then all agree, and take its number).

        Under multi_worker the answer is the all-reduced value alone: a
        signal landing here while the reduction runs counts at the next
        one, never at this one, or this worker would stop (and start the
        checkpoint's collectives) while the others step on."""
        if self.any_worker is None:
            return self.signal is not None
        number = self.any_worker(self.signal or 0)
        if number and self.signal is None:
            self.signal, self.from_peer = number, True
        return bool(number)

    def agreed(self, stop: bool) -> bool:
        """`stop`, or under multi_worker whether any worker's `stop` is True
        (a collective: every worker asks at the same points). The patience
        rule reads the run's history from metrics.jsonl, which after a
        resume only the chief's holds (a worker logs into a new directory),
        so only the chief's answer can be right; the others follow it
        (their histories are a part of the chief's, and a rule met on a
        part is met on the whole)."""
        if self.any_worker is None:
            return stop
        return bool(self.any_worker(int(stop)))

    def resumed(self) -> None:
        """The process continues after a stop (SIGCONT): the time since the
        interval's last finished step (or its start) was not training."""
        since = max(self._last_end, self._t0)
        self._paused += max(0.0, time.perf_counter() - since)

    def _rate(self, step: int) -> float:
        """Steps per second of the interval ending at `step`, pauses excluded."""
        elapsed = time.perf_counter() - self._t0 - self._paused
        return (step - self._epoch_start) / max(elapsed, 1e-6)

    def _check_finite(self, step: int, logs) -> None:
        """Raises `NonFiniteError` if a step since the last check was NaN/Inf."""
        bad = int(self.model.first_nonfinite_step.numpy())
        if bad >= 0 or not all(math.isfinite(float(logs[k])) for k in METRIC_NAMES):
            bad_step = bad if bad >= 0 else step
            last = "none" if self._saved_step is None else self._checkpoint_path()
            raise NonFiniteError(
                f"non-finite loss or gradient at step {bad_step}; training "
                f"stopped, last good checkpoint: {last}"
            )

    def _stop(self, logs=None):
        """Checkpoints the current step, logs the partial interval, raises
        `Interrupted`."""
        step = self._step()
        if logs and step > self._epoch_start:
            # The metrics as the interval's end reads them (cross-replica:
            # a batch's logs hold each replica's own `skipped_steps`, k / R).
            result = self.model.get_metrics_result()
            logs = {k: result[k] for k in logs}
            self._check_finite(step, logs)
            rate = self._rate(step)
            self.history.append(self._train_row(step, logs, rate))
        if step != self._saved_step:
            self._save(step)
        name = signal.Signals(self.signal).name
        if self.from_peer:
            name += " to another worker"
        raise Interrupted(
            f"{name}: checkpointed step {step} in {self.manager.directory}; rerun "
            "the same command to resume",
            exit_code=128 + self.signal,
        )

    def _save(self, step: int) -> None:
        self.manager.save(checkpoint_number=step)
        self._saved_step = step

    def _checkpoint_path(self) -> str:
        return os.path.join(self.manager.directory, f"ckpt-{self._saved_step}")

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._paused = 0.0
        self._epoch_start = self._step()
        # Intervals end at multiples of log_every, and so at lr_drop_step.
        self.model.optimizer.learning_rate = self.config.train.learning_rate_at(
            self._epoch_start
        )

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _train_row(self, step: int, logs, rate: float) -> dict[str, Any]:
        """Writes the train row of the interval ending at `step`, with the
        learning rate it ran at."""
        lr = self.config.train.learning_rate_at(self._epoch_start)
        values = {**logs, "learning_rate": lr}
        if round(float(logs.get("skipped_steps", 0))) >= step - self._epoch_start:
            # Every step skipped (--skip_nonfinite): the means had no update
            # and read 0.0, which looks like a perfect bound. Left out.
            values = {k: v for k, v in values.items() if k not in METRIC_NAMES}
        return self.log.write("train", step, values, rate)

    def evaluate_periodic(self, step: int, evals) -> list[dict[str, Any]]:
        """The periodic evaluation of `evals` at `step`: logged, kept in
        the history, with the samples image; returns its records."""
        records = evaluate(
            self.model, evals, step, self.log, _warn_unused_z(self.config)
        )
        self.history.extend(records)
        self.log.image("samples", step, plotting.tile(self.sample_fn()))
        return records

    def on_epoch_end(self, epoch, logs=None):
        t = self.config.train
        step = self._step()
        rate = self._rate(step)
        self._check_finite(step, logs)
        record = self._train_row(step, logs, rate)
        self.history.append(record)
        if step % t.eval_every == 0 or step >= t.steps:
            records = self.evaluate_periodic(step, self.evals)
            if self.stop_when is not None and step < t.steps:
                self.stopped = self.agreed(bool(self.stop_when(records)))
                self.model.stop_training = self.stopped
        if step % t.checkpoint_every == 0 or step >= t.steps or self.stopped:
            self._save(step)
        if self._signalled():
            self._stop()
        if self.progbar is not None:
            self.progbar.update(
                step - self._start_step,
                values=[
                    ("nll_bound", float(logs["nll_bound"])),
                    ("kl_a", float(logs["kl_a"])),
                ],
                finalize=True if self.stopped else None,  # Ends the bar's line.
            )


def evaluate(
    model: LatentVariableModel,
    evals: dict[str, tf.data.Dataset],
    step: int,
    log: MetricsLog | None = None,
    warn_unused_z: bool = False,
    final: bool = False,
) -> list[dict[str, Any]]:
    """Runs `test_step` over each eval set (fixed eval seed); logs each split.

    For a VMA each record also carries the address health of the split
    (`vma_tf.address_health.measure`), and a collapsed address prints one
    warning line naming the step. With `warn_unused_z`, so does a split whose
    KL of z is below `UNUSED_Z_MAX_KL` (`unused_z_warning`).

    Under a strategy with several replicas each global batch is split across
    them (`distribute`) and the metrics are averaged over all replicas.
    """
    records = []
    strategy = model.distribute_strategy
    for split, ds in evals.items():
        model.reset_eval_seed()
        t0 = time.perf_counter()
        values = model.evaluate(
            distribution.distribute(strategy, ds),
            steps=_num_batches(ds) if strategy.num_replicas_in_sync > 1 else None,
            verbose=0,
            return_dict=True,
        )
        rate = _num_batches(ds) / (time.perf_counter() - t0)
        if model.has_addresses:
            values = {**values, **address_health.measure(model, ds)}
            if address_health.collapsed(values):
                print(address_health.collapse_warning(split, step, values))
        if warn_unused_z and float(values["kl_z"]) < UNUSED_Z_MAX_KL:
            print(unused_z_warning(split, step, float(values["kl_z"])))
        if log is not None:
            records.append(log.write(split, step, values, rate, final))
        else:
            records.append({"split": split, "step": step, **values})
    return records


def _warn_unused_z(config: Config) -> bool:
    """Whether an unused z is worth a warning: not in recall, where the
    targets are memory entries and z unused is the optimum (Fig. 2A)."""
    return config.data.task != "recall"


def _num_batches(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    return n if n > 0 else 1


def train_and_evaluate(
    config: Config,
    workdir: str | os.PathLike,
    progress: bool = True,
    stop_when: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint).

    Args:
        config: experiment config; validated here.
        workdir: run directory (created if missing).
        progress: show a progress bar.
        stop_when: called after each periodic evaluation before the last
            step with that evaluation's records (one per split, as written
            to metrics.jsonl); True ends training at that step: it is
            checkpointed, then the final evaluation, samples and summary
            follow as after the last step. Rerunning resumes from there.

    Returns:
        Summary dict: final step, wall time, steps/s, last train/valid/test
        metrics, paths. A non-chief worker of `multi_worker` returns its own
        numbers (equal to the chief's) with `"chief": False`; its files were
        temporary.

    Raises:
        ConfigError: bad config or workdir (nothing written).
        vma_tf.data.files.DataError: missing or corrupt data (nothing written).
        NonFiniteError: NaN/Inf in training (last good checkpoint kept).
    """
    config, workdir = preflight(config, workdir)
    if config.train.deterministic:  # Before any TF op; process-wide.
        tf.config.experimental.enable_op_determinism()
    with _held_while_starting(config.train.strategy) as held:
        # Before any TF op; then the holding handlers over TF's SIGTERM one.
        strategy = distribution.make_strategy(config.train.strategy)
        held.install()
        distribution.check_batch(config, strategy.num_replicas_in_sync)
        task_type, task_id, chief = distribution.task_info(strategy)
        if chief:
            write_dir = workdir
        else:  # Workers write into a temporary directory (deleted at the end).
            write_dir = pathlib.Path(
                tempfile.mkdtemp(prefix=f"vma_{task_type}{task_id}_")
            )
            print(f"{task_type} {task_id}: not the chief, writing into {write_dir}")
        data = make_data(config)
        write_dir.mkdir(parents=True, exist_ok=True)
        try:
            with workdir_lock(write_dir):
                with strategy.scope():
                    summary = _train(
                        config,
                        write_dir,
                        data,
                        progress and chief,
                        workdir,
                        stop_when,
                        held,
                    )
        finally:
            if not chief:
                shutil.rmtree(write_dir, ignore_errors=True)
    if not chief:
        summary = {
            **summary,
            "workdir": str(workdir),
            "samples_png": f"(written by the chief into {workdir})",
            "chief": False,
        }
    return summary


def _train(
    config: Config,
    workdir: pathlib.Path,
    data,
    progress: bool,
    restore_dir: pathlib.Path | None = None,
    stop_when: Callable[[list[dict[str, Any]]], bool] | None = None,
    held: _HeldSignals | None = None,
):
    """Trains in `workdir`; resumes from `restore_dir/checkpoints` (default
    `workdir`), the chief's directory for a non-chief worker. `stop_when`:
    as in `train_and_evaluate`; `held`: signals received while starting
    (`_held_while_starting`)."""
    t = config.train
    example = data.make_batch(tf.constant(0, tf.int64))
    with dtype_policy_scope(t.precision):
        model = build_model(config, data.x_shape, example, data.pixel_mean)
    checkpoint = checkpointing.make_checkpoint(model)
    checkpointing.repair_state(workdir / "checkpoints")  # Before the manager reads it.
    manager = tf.train.CheckpointManager(
        checkpoint, workdir / "checkpoints", max_to_keep=t.keep_checkpoints
    )
    start_step = _restore(model, checkpoint, restore_dir or workdir, t.init_from)
    finished = _finished_summary(restore_dir or workdir, start_step, t)
    if finished is not None:
        print(
            f"The run ended at step {start_step} (summary.json): nothing to train or "
            "evaluate (`launchers.evaluate` evaluates it again)"
        )
        return finished
    if start_step > t.steps:  # Keras would train on without end.
        raise ConfigError(
            f"--steps={t.steps} is below the run's step {start_step} (its newest "
            f"checkpoint); give --steps >= {start_step} to resume it"
        )
    # Written once the run will train: a finished or refused rerun leaves
    # the run's config.json as it was.
    atomic_write(workdir / "config.json", config.to_json() + "\n")
    log = MetricsLog(workdir, start_step)
    memory = None if data.sample_memory is None else tf.constant(data.sample_memory)
    x_hw = data.x_shape[:2] if len(data.x_shape) == 3 else (28, 28)
    sample_fn = lambda: sample_grid(model, memory, 8, 10, t.seed, x_hw)
    stop_when = ttq.with_patience(stop_when, t.patience, log.path)
    monitor = _Monitor(
        config, log, manager, data.evals, start_step, sample_fn, progress, stop_when
    )
    if start_step:
        # The restored step's rows: a rerun with nothing left to train (its
        # final evaluation was cut short) summarises them as the run did.
        monitor.history.extend(r for r in log.rows if r.get("step") == start_step)
    t0 = time.perf_counter()
    step = start_step
    with _checkpoint_on_signals(monitor, model.distribute_strategy, held):
        if start_step and stop_when is not None:
            # A resumed run that had met its rule (--patience, or the bounds
            # of `launchers.time_to_quality`) by the restored step, and was
            # stopped in its final evaluation: evaluated, not trained on.
            # Every worker agrees (a worker's own log is new and empty).
            try:
                met = _evaluated(log.rows) and bool(stop_when(_periodic(log.rows)))
            except ConfigError:  # A split never evaluated: every worker
                met = False  # raises it at the first evaluation instead.
            monitor.stopped = monitor.agreed(met)
        for length, count in log_intervals(start_step, t.steps, t.log_every):
            if monitor.stopped:
                break
            model.fit(
                distribution.distribute(model.distribute_strategy, data.train(step)),
                epochs=count,
                steps_per_epoch=length,
                callbacks=[monitor],
                verbose=0,
                shuffle=False,
            )
            step += length * count
            if monitor.stopped:
                break
    wall = time.perf_counter() - t0
    step = int(model.optimizer.iterations.numpy())
    # Rows restored from the log (a rerun that trained nothing) are only in
    # the chief's history under multi_worker: there every worker evaluates
    # every final split alike (collectives), none taken from history.
    shared = monitor.any_worker is None or step > start_step
    if shared and step == start_step and step >= t.steps:
        # Nothing trained and the run's last step was not an evaluation step
        # (e.g. `--steps` set to a checkpoint a kill left between two
        # evaluations): its periodic evaluation, as the last step has.
        missing = {
            s: ds
            for s, ds in data.evals.items()
            if not any(r["step"] == step and r["split"] == s for r in monitor.history)
        }
        if missing:
            monitor.set_model(model)  # Keras sets it in `fit`, never called here.
            monitor.evaluate_periodic(step, missing)
    final = _final_evaluation(
        model,
        data,
        step,
        log,
        monitor.history if shared else [],
        _warn_unused_z(config),
    )
    plotting.save_grid(
        workdir / "samples.png",
        sample_fn(),
        title=samples_title(config.name, model, memory),
    )
    summary = _summary(
        config, workdir, model, start_step, wall, monitor.history + final
    )
    atomic_write(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.writer.flush()
    return summary


def _evaluated(rows: list[dict[str, Any]]) -> bool:
    """Whether `rows` (a run's metrics) hold a periodic evaluation: a stop
    rule reads none before the first (a checkpoint taken before it)."""
    return any(r.get("split") != "train" for r in rows)


def _periodic(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of each (split, step) of `rows`: the periodic
    evaluations, without a final evaluation's rows at the last step (the
    learned split's whole test set), as `time_to_quality` reads a log."""
    seen: set[tuple[Any, Any]] = set()
    out = []
    for row in rows:
        key = (row.get("split"), row.get("step"))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _finished_summary(root: pathlib.Path, start_step: int, t) -> dict[str, Any] | None:
    """The stored summary of a run that has already ended at `start_step`,
    for a rerun of its command to leave the run as it is (no evaluation
    again, no duplicate rows in metrics.jsonl).

    Args:
        root: the run's directory (the chief's, on every worker).
        start_step: the step restored from its checkpoint.
        t: the run's `TrainConfig`.

    Returns:
        `summary.json` with `steps_this_run` 0, if it was written at
        `start_step` (the final evaluation ran there) and nothing is left to
        train (`t.steps` reached, or `t.patience`'s rule met); otherwise None,
        also for an unreadable summary (the final evaluation then runs again).
    """
    summary = read_summary(root)
    if summary is None or summary.get("step") != start_step:
        return None
    ended = start_step >= t.steps or bool(
        t.patience and _plateaued_at(root / "metrics.jsonl", start_step, t.patience)
    )
    if not ended:
        return None
    return {**summary, "steps_this_run": 0, "wall_time_sec": 0.0, "steps_per_sec": None}


def _plateaued_at(path: pathlib.Path, step: int, patience: int) -> bool:
    """Whether the patience rule is met by the rows of `path` up to `step`
    (rows after it, of a run stopped before their checkpoint, do not count:
    the resumed run drops them)."""
    try:
        rows = ttq.read_metrics(path)
    except (OSError, ValueError):
        return False
    return ttq.plateaued_at(rows, step, patience) is not None


def _final_evaluation(model, data, step, log, history, warn_unused_z):
    """The records of `data.final_evals` at `step`, taken from `history` where
    it has them: a split the periodic evaluation has just run at this step on
    the same dataset (the episodic presets' `test`), and the final rows a run
    stopped in its final evaluation wrote before (marked `final`; a rerun
    evaluates only the splits it had not reached, so no row is written
    twice). The others are evaluated and logged, marked `final`."""
    at_step = [r for r in history if r["step"] == step]
    finals = {r["split"]: r for r in at_step if r.get("final")}
    periodic = {
        r["split"]: r
        for r in at_step
        if not r.get("final")
        and r["split"] in data.evals
        and data.evals[r["split"]] is data.final_evals.get(r["split"])
    }
    done = {**periodic, **finals}
    todo = {s: ds for s, ds in data.final_evals.items() if s not in done}
    fresh = evaluate(model, todo, step, log, warn_unused_z, final=True)
    records = {**done, **{r["split"]: r for r in fresh}}
    return [records[split] for split in data.final_evals]


def _restore(model, checkpoint, checkpoint_root: pathlib.Path, init_from) -> int:
    """Restores the newest valid checkpoint of `checkpoint_root/checkpoints`
    (or warm-starts from `init_from`); returns the step to start from."""
    directory = pathlib.Path(checkpoint_root) / "checkpoints"
    latest = checkpointing.newest(directory)  # From the files, not the state file.
    # Checkpoints are numbered by step. All workers must agree before the
    # restore, whose variable creation is itself a collective.
    distribution.check_same_step(
        model.distribute_strategy, step_of(latest) if latest else 0
    )
    if latest:
        latest = checkpointing.restore_newest_valid(
            checkpoint,
            directory,
            warn=lambda message: print(message, file=sys.stderr),
        )
    elif init_from:
        source = checkpointing.warm_start(model, init_from)
        print(f"Warm start: model weights from {source}")
    start_step = int(model.optimizer.iterations.numpy())
    if start_step:
        print(f"Resuming from {latest} at step {start_step}")
    return start_step


def _summary(config, workdir, model, start_step, wall, records) -> dict[str, Any]:
    """The run's summary: steps, wall time, the last record of each split."""
    step = int(model.optimizer.iterations.numpy())
    trained = step - start_step
    last = {}
    for rec in records:
        last[rec["split"]] = {
            k: rec[k] for k in (*METRIC_NAMES, *address_health.HEALTH_KEYS) if k in rec
        }
    return {
        "name": config.name,
        "workdir": str(workdir),
        "step": step,
        "steps_this_run": trained,
        "wall_time_sec": wall,
        "steps_per_sec": trained / wall if trained else None,
        "metrics": last,
        "samples_png": str(workdir / "samples.png"),
    }


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _HeldSignals:
    """SIGINT / SIGTERM received while a `multi_worker` run starts.

    Attributes:
        signal: the first signal's number, or None.
        originals: `{signal: handler}` installed before the holding began.
    """

    def __init__(self, active: bool):
        self.signal: int | None = None
        self.originals: dict = {}
        self._active = active

    def _handler(self, signum, frame):
        self.signal = self.signal or signum
        signal.signal(signum, self.originals[signum])  # A second acts at once.

    def install(self) -> None:
        """(Re)installs the holding handlers for the signals not yet
        received. Called again once the strategy exists: TensorFlow's
        preemption notifier of `MultiWorkerMirroredStrategy` takes SIGTERM
        over at the C level (and would swallow it), unseen by Python."""
        if not self._active:
            return
        for s in _STOP_SIGNALS:
            if self.signal != s:
                previous = signal.signal(s, self._handler)
                self.originals.setdefault(s, previous)


@contextlib.contextmanager
def _held_while_starting(strategy: str):
    """Under `--strategy=multi_worker`, holds SIGINT and SIGTERM while the
    worker starts (the cluster, data, model and restore, which are collectives
    with the other workers): the first is recorded, and training's monitor
    acts on it at the first step, where every worker agrees to stop
    (`_checkpoint_on_signals`). A worker dying there would leave the others
    waiting in collectives. A second signal acts at once. Other strategies
    (one process, nothing written yet) keep the default actions."""
    held = _HeldSignals(
        strategy == "multi_worker"
        and threading.current_thread() is threading.main_thread()
    )
    held.install()
    try:
        yield held
    finally:
        for s, h in held.originals.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _checkpoint_on_signals(
    monitor: _Monitor,
    strategy: tf.distribute.Strategy,
    held: _HeldSignals | None = None,
):
    """While training, SIGINT and SIGTERM set `monitor.signal`: the monitor
    checkpoints the step that is running when it ends, and stops with
    `Interrupted`. A second signal acts at once (the previous handler is
    back). Only in the main thread. Under `multi_worker` the workers agree
    after every step (`monitor.any_worker`, one small all-reduce), so a
    signal to any one of them stops all at the same step, each checkpointing
    it (a worker stopping alone would leave the others waiting in
    collectives). A signal `held` while the run started is acted on at the
    first step, as one received then. SIGCONT (a stopped process continuing)
    calls `monitor.resumed`, so that the pause is not counted as training
    time."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        monitor.any_worker = _largest_over_workers(strategy)

    def handler(signum, frame):
        monitor.signal = signum
        signal.signal(signum, previous[signum])

    previous = {s: signal.signal(s, handler) for s in _STOP_SIGNALS}
    if held is not None:
        previous.update(held.originals)  # Not the holding handlers.
        if held.signal is not None:  # Its second one acts at once.
            monitor.signal = held.signal
            signal.signal(held.signal, previous[held.signal])
    if hasattr(signal, "SIGCONT"):  # Not on Windows.
        cont = signal.SIGCONT
        previous[cont] = signal.signal(cont, lambda signum, frame: monitor.resumed())
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _largest_over_workers(strategy: tf.distribute.Strategy) -> Callable[[int], int]:
    """`value -> max over all replicas of value` for values in [0, 64] (signal
    numbers; `ReduceOp` has no MAX, so one-hot counts are summed). A
    collective: every worker must call it at the same points of training."""

    @tf.function
    def largest(value):
        local = strategy.run(lambda: tf.one_hot(value, 65, dtype=tf.float32))
        counts = strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None)
        return tf.reduce_max(tf.where(counts > 0)[:, 0])

    return lambda value: int(largest(tf.constant(value, tf.int32)))


def log_intervals(start: int, stop: int, every: int) -> list[tuple[int, int]]:
    """Train-metric intervals from step `start` to `stop`, as `(length,
    count)` runs: up to the next multiple of `every`, whole intervals, then
    the rest. E.g. `(50, 275, 100)` -> `[(50, 1), (100, 1), (75, 1)]`;
    none if `stop <= start`."""
    if stop <= start:
        return []
    runs = []
    head = min(-start % every, stop - start)
    if head:
        runs.append((head, 1))
    whole = (stop - start - head) // every
    if whole:
        runs.append((every, whole))
    tail = stop - start - head - whole * every
    if tail:
        runs.append((tail, 1))
    return runs
