"""The run's records: `metrics.jsonl` and TensorBoard (`MetricsLog`), and the
summary table the training launcher prints (`format_summary`)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np
import tensorflow as tf

from vma_tf import address_health
from vma_tf.errors import WorkdirError
from vma_tf.modeling.models import METRIC_NAMES
from vma_tf.workdir import atomic_write


class MetricsLog:
    """Appends JSON lines to metrics.jsonl and scalars to TensorBoard.

    On resume, both drop what was logged past the checkpoint resumed from
    (steps a killed process ran and the resumed run redoes): the rows of
    metrics.jsonl, and the events of the run's TensorBoard files
    (`drop_events_past`), so no curve shows a step twice.

    Attributes:
        path: the run's `metrics.jsonl`.
        rows: its rows up to the step resumed from, as read when it opened
            (the file's one read at start-up; `[]` for a new run).
    """

    def __init__(self, workdir: pathlib.Path, start_step: int):
        self.path = workdir / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():  # Drop lines past the checkpoint we resume from.
            kept = _rows_up_to(self.path, start_step)
            atomic_write(self.path, "".join(line + "\n" for line, _ in kept))
            self.rows = [row for _, row in kept]
        if (workdir / "tb").is_dir():
            drop_events_past(workdir / "tb", start_step)
        self.writer = tf.summary.create_file_writer(str(workdir / "tb"))

    def write(
        self,
        split: str,
        step: int,
        values: dict[str, float],
        steps_per_sec: float,
        final: bool = False,
    ) -> dict[str, Any]:
        """Appends one row (and its TensorBoard scalars); returns it. `final`
        marks a row of the final evaluation (`"final": true`), which a rerun
        stopped in that evaluation takes instead of evaluating it again."""
        record = {
            "split": split,
            "step": int(step),
            # All of them (a train row of steps all skipped has none).
            **{
                k: float(values[k])
                for k in METRIC_NAMES
                if k in values or split != "train"
            },
            # Non-finite steps skipped in this log window (--skip_nonfinite).
            **{k: int(values[k]) for k in ("skipped_steps",) if k in values},
            # Address health at evaluations of a VMA (`vma_tf.address_health`).
            **{k: float(values[k]) for k in address_health.HEALTH_KEYS if k in values},
            # Adam's learning rate over the interval (train rows).
            **{k: float(values[k]) for k in ("learning_rate",) if k in values},
            "steps_per_sec": float(steps_per_sec),
            "wall_time": time.time(),
            **({"final": True} if final else {}),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=int(step)):
            for k in (*METRIC_NAMES, "skipped_steps", "learning_rate"):
                if k in record:
                    tf.summary.scalar(f"{split}/{k}", record[k])
            for k in address_health.HEALTH_KEYS:
                if k in record:
                    tf.summary.scalar(f"{split}/address/{k}", record[k])
            tf.summary.scalar(f"{split}/steps_per_sec", steps_per_sec)
        return record

    def image(self, name: str, step: int, grid: np.ndarray) -> None:
        with self.writer.as_default(step=int(step)):
            tf.summary.image(name, grid[np.newaxis, ..., np.newaxis])
        self.writer.flush()


def drop_events_past(directory: pathlib.Path, step: int) -> list[pathlib.Path]:
    """Rewrites each TensorBoard event file in `directory` without its events
    of steps past `step` (and without a last record cut short by a kill),
    each via a temporary file and `os.replace`; files with nothing to drop
    are left as they are.

    Args:
        directory: a run's `tb` directory.
        step: the step resumed from; events at or before it are kept.

    Returns:
        The files rewritten.
    """
    from tensorflow.core.util import event_pb2

    rewritten = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        records, cut = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                records.append(record.numpy())
        except tf.errors.DataLossError:  # A last record cut short.
            cut = True
        kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
        if len(kept) == len(records) and not cut:
            continue
        tmp = path.with_name(f".rewrite.{os.getpid()}.tmp")  # Not read by TensorBoard.
        try:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for record in kept:
                    writer.write(record)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        rewritten.append(path)
    return rewritten


def _rows_up_to(path: pathlib.Path, step: int) -> list[tuple[str, dict[str, Any]]]:
    """The lines of `path` (a metrics.jsonl) whose row is at or before `step`,
    each with its parsed row.

    A last line that is not JSON (a write cut short: a full disk, a machine
    lost) is dropped with a note on stderr; anywhere else it is an error.

    Raises:
        WorkdirError: a line before the last is not a JSON row with a step.
    """
    lines = [
        (number, line)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip()
    ]
    kept = []
    for number, line in lines:
        try:
            row = json.loads(line)
            row_step = row["step"]
        except (ValueError, TypeError, KeyError):
            if number == lines[-1][0]:
                print(f"{path}: its last line was cut short; dropped", file=sys.stderr)
                continue
            raise WorkdirError(
                f"{path} line {number} is not a metrics row; repair or remove the "
                "file to resume"
            ) from None
        if row_step <= step:
            kept.append((line, row))
    return kept


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
    ]
    # With an address: the optimal lookup table log|M| and q's mass on the
    # target's own slot/class (evaluated splits only).
    rows = summary["metrics"]
    extra = [k for k in ("log|M|", "q_own") if any(_extra(v, k) for v in rows.values())]
    columns = (*METRIC_NAMES[1:], *extra)
    lines.append(f"{'split':<16}" + "".join(f"{k:>11}" for k in columns))
    for split, values in rows.items():
        cells = (_extra(values, k) for k in columns)
        lines.append(
            f"{split:<16}"
            + "".join(f"{'-':>11}" if v is None else f"{v:>11.3f}" for v in cells)
        )
    lines.append(f"samples: {summary['samples_png']}")
    return "\n".join(lines)


def _extra(values: dict, key: str):
    """A summary cell: a metric, log|M| from the address health, or None."""
    if key == "log|M|":
        size = values.get("memory_size")
        return math.log(size) if size else None
    return values.get(key)
