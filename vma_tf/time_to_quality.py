"""Time to quality: the training steps and time a run took to bring an
evaluation bound below given thresholds, read from its `metrics.jsonl`.

No TensorFlow import: `launchers.time_to_quality --notrain` reports on a
finished (or running) run in a fraction of a second.

Definitions (`time_to_quality`):

* **Reached at** step S: the first evaluation of `split` (in step order)
  whose `nll_bound` is <= the threshold. Evaluations happen every
  `eval_every` steps (and at the end), so S is a multiple of `eval_every`
  (or the last step): the true crossing lies in (S - eval_every, S].
  Several rows of one split at one step (the periodic and the final
  evaluation of the last step, or the final evaluation repeated by a rerun
  of a finished run) are one evaluation of the same weights; the first row
  is used.
* **Training time** up to S: the seconds spent inside training steps,
  summed over the logging intervals up to S. Each `train` row closes an
  interval of (its step - the previous train row's step) optimiser steps run
  at its `steps_per_sec`, timed from the interval's first step to its last
  (`training._Monitor`): it includes the one-time graph tracing of each
  process (in its first interval) and excludes evaluations, checkpoint
  writes, sample grids, start-up, data preparation and the time between
  processes of a resumed run, and steps a killed process ran past its last
  checkpoint (their rows are dropped on resume; the resumed run redoes them
  and counts them once). It is therefore comparable across runs resumed any
  number of times, but it is wall-clock on a shared machine: other jobs
  inflate it, steps are not affected. A process stopped mid-interval
  (`kill -STOP` ... `kill -CONT`, as the long runs are while CI runs) logs
  the interval without the pause (since 3698f0d; rows written before
  count the pause).
* **Resumed runs**: `MetricsLog` appends to the file from each process and,
  on resume, first drops every row past the checkpoint it resumes from, so
  train steps increase along the file. Should a train row repeat or go back
  (a log written without that truncation, or concatenated), the later
  history wins: the rows at or past its step are dropped, as `MetricsLog`
  would have, and its interval starts at the previous remaining train row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Reach:
    """One threshold's result.

    Attributes:
        threshold: the bound asked for (nats).
        reached: some evaluation had `nll_bound <= threshold`.
        step: reached: the first such evaluation's step; otherwise the step
            of the best (lowest) evaluation so far.
        nll_bound: the bound at `step`.
        train_seconds: training time up to `step` (module docstring).
    """

    threshold: float
    reached: bool
    step: int
    nll_bound: float
    train_seconds: float


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """`time_to_quality`'s answer.

    Attributes:
        split: the evaluation split read.
        reaches: one `Reach` per threshold, in the order asked.
        last_step: the last training step logged.
        train_seconds: training time up to `last_step`.
        evaluations: evaluations of `split` (distinct steps).
    """

    split: str
    reaches: tuple[Reach, ...]
    last_step: int
    train_seconds: float
    evaluations: int

    @property
    def all_reached(self) -> bool:
        return all(r.reached for r in self.reaches)


class MetricsError(ValueError):
    """A `metrics.jsonl` line (not the last) is not a JSON object."""


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a `metrics.jsonl` (blank lines skipped).

    A last line that is not JSON (a write cut short: a full disk, a machine
    lost; the trainer drops it when it resumes) is left out.

    Args:
        path: the file.

    Returns:
        One dict per line, in file order.

    Raises:
        OSError: the file cannot be read.
        MetricsError: a line is not a JSON object (message names path and
            line).
    """
    rows = []
    lines = [
        (number, line)
        for number, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1)
        if line.strip()
    ]
    for i, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise MetricsError(f"{path} line {number} is not JSON ({e})") from None
        if not isinstance(row, dict):
            raise MetricsError(f"{path} line {number} is not a JSON object")
        rows.append(row)
    return rows


def check_thresholds(values: Iterable[Any]) -> tuple[float, ...]:
    """The thresholds as floats.

    Args:
        values: numbers or strings such as `"100"` (e.g. a list flag's items).

    Returns:
        The finite floats, in the order given.

    Raises:
        ValueError: none given, or one is not a finite number (the message
            is the part after the flag name, e.g. `must be ...`).
    """
    values = list(values)
    if not values:
        raise ValueError("must list one or more bounds, e.g. 100,90")
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            raise ValueError(
                f"must be comma-separated finite numbers (nats), e.g. 100,90; got {v!r}"
            )
        out.append(x)
    return tuple(out)


def _history(
    rows: Iterable[Mapping[str, Any]], split: str
) -> tuple[list[tuple[int, float]], dict[int, float]]:
    """`([(train step, interval seconds)], {eval step: nll_bound})` of the
    surviving history (module docstring: resumed runs)."""
    train: list[tuple[int, float]] = []
    evals: dict[int, float] = {}
    for i, row in enumerate(rows, 1):
        try:
            kind, step = row["split"], int(row["step"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"metrics row {i} has no split and step: {row}") from None
        if kind == "train":
            rate = row.get("steps_per_sec")
            if not isinstance(rate, (int, float)) or not rate > 0:
                raise ValueError(
                    f"metrics row {i} (train, step {step}) has steps_per_sec="
                    f"{rate!r}; need a positive number"
                )
            if train and train[-1][0] >= step:  # Rewound: the later rows win.
                while train and train[-1][0] >= step:
                    train.pop()
                evals = {s: b for s, b in evals.items() if s < step}
            start = train[-1][0] if train else 0
            train.append((step, (step - start) / rate))
        elif kind == split and step not in evals:
            bound = row.get("nll_bound")
            if not isinstance(bound, (int, float)):
                raise ValueError(
                    f"metrics row {i} ({split}, step {step}) has no nll_bound"
                )
            evals[step] = float(bound)
    return train, evals


def time_to_quality(
    rows: Iterable[Mapping[str, Any]],
    thresholds: Sequence[float],
    split: str = "test",
) -> QualityReport:
    """When did a run's `split` bound first reach each threshold?

    Args:
        rows: the rows of the run's `metrics.jsonl`, in file order
            (`read_metrics`).
        thresholds: bounds in nats (`nll_bound <= threshold` counts).
        split: the evaluation split; `test` is the periodic one of the
            Omniglot presets, `valid` of the MNIST presets.

    Returns:
        A `QualityReport` (module docstring for the definitions).

    Raises:
        ValueError: no thresholds, a row without split/step, a train row
            without a positive `steps_per_sec`, or no `split` evaluation
            (the message lists the splits the rows have).
    """
    rows = list(rows)
    thresholds = check_thresholds(thresholds)
    train, evals = _history(rows, split)
    if not evals:
        have = sorted({str(r.get("split")) for r in rows} - {"train"})
        raise ValueError(
            f"no {split!r} evaluation in the metrics (evaluated splits: "
            f"{', '.join(have) or 'none'})"
        )
    points = _curve(train, evals)
    best = min(points, key=lambda p: (p[1], p[0]))
    reaches = []
    for threshold in thresholds:
        hit = next((p for p in points if p[1] <= threshold), None)
        step, bound, seconds = hit or best
        reaches.append(Reach(threshold, hit is not None, step, bound, seconds))
    last_step, seconds = _extent(train)
    return QualityReport(
        split=split,
        reaches=tuple(reaches),
        last_step=last_step,
        train_seconds=seconds,
        evaluations=len(evals),
    )


def _extent(train: list[tuple[int, float]]) -> tuple[int, float]:
    """`(last step, training seconds)` of `_history`'s train intervals."""
    return (train[-1][0] if train else 0, sum(seconds for _, seconds in train))


def trained_extent(rows: Iterable[Mapping[str, Any]]) -> tuple[int, float]:
    """`(last trained step, training seconds to it)` of a run so far (module
    docstring: resumed runs), evaluated or not; `(0, 0.0)` before any.

    Raises:
        ValueError: as `time_to_quality` for malformed rows.
    """
    return _extent(_history(rows, "")[0])


def train_seconds(rows: Iterable[Mapping[str, Any]]) -> float:
    """The run's training time so far (`trained_extent`'s seconds)."""
    return trained_extent(rows)[1]


def curve(
    rows: Iterable[Mapping[str, Any]], split: str = "test"
) -> list[tuple[int, float, float]]:
    """A run's learning curve: `(step, nll_bound, training seconds to step)`
    for each evaluation of `split`, in step order (the same reading of
    resumed runs and training time as `time_to_quality`).

    Raises:
        ValueError: as `time_to_quality` for malformed rows (no evaluations
            gives an empty list).
    """
    return _curve(*_history(rows, split))


def _curve(train, evals) -> list[tuple[int, float, float]]:
    """`curve` from `_history`'s `(train, evals)`."""
    cumulative, total = [], 0.0
    for step, seconds in train:
        total += seconds
        cumulative.append((step, total))

    def seconds_to(step: int) -> float:
        # Evaluations follow the train row of their step; a missing one
        # (a log cut by hand) counts the train rows before it.
        return max((c for s, c in cumulative if s <= step), default=0.0)

    return [(s, b, seconds_to(s)) for s, b in sorted(evals.items())]


def at_budget(
    points: Sequence[tuple[int, float, float]],
    budget: int,
    trained_to: int | None = None,
) -> float | None:
    """The bound of the last evaluation at or before `budget` steps of a
    `curve`; None if the run has not trained that far (or has no evaluation
    by then).

    Args:
        trained_to: the run's last trained step (default: its last
            evaluation's), which may lie past its last evaluation.
    """
    if not points:
        return None
    if (points[-1][0] if trained_to is None else trained_to) < budget:
        return None
    before = [b for s, b, _ in points if s <= budget]
    return before[-1] if before else None


def reached_all(
    records: Iterable[Mapping[str, Any]], thresholds: Sequence[float], split: str
) -> bool:
    """Whether these evaluation records alone reach every threshold (the
    lowest): `training.train_and_evaluate`'s `stop_when` for a run whose
    earlier evaluations have not."""
    lowest = min(check_thresholds(thresholds))
    return any(r["split"] == split and r["nll_bound"] <= lowest for r in records)


def stop_when(
    thresholds: Sequence[float], split: str
) -> Callable[[list[dict[str, Any]]], bool]:
    """`training.train_and_evaluate`'s `stop_when` of `launchers.time_to_quality`:
    every threshold reached on `split` (`reached_all`).

    Its first call refuses a `split` that is not among the evaluation's
    records (the run does not evaluate it periodically, so it could never
    stop the run).

    Raises:
        ConfigError: (when called) `split` is not evaluated; the message
            names the splits that are.
    """
    from vma_tf.configs import ConfigError

    def stop(records: list[dict[str, Any]]) -> bool:
        splits = sorted({r["split"] for r in records})
        if split not in splits:
            raise ConfigError(
                f"--split={split} is not evaluated periodically by this run "
                f"(it evaluates {', '.join(splits)}); rerun with one of them"
            )
        return reached_all(records, thresholds, split)

    return stop


def already_done(
    workdir: str | os.PathLike, thresholds: Sequence[float], steps: int, split: str
) -> str:
    """Why the run in `workdir` needs no more training toward `thresholds`
    on `split` or `steps` ("" if it does; `launchers.time_to_quality`).

    As `training` decides a run ended: a run with a checkpoint must also have
    its final evaluation there (summary.json of that step). One stopped in it
    is trained again, which evaluates it (a rule met by the restored step
    trains no further). A log with no checkpoint has nothing to resume.

    Raises:
        ValueError: a bad line in the run's metrics.jsonl (`read_metrics`).
    """
    from vma_tf.workdir import checkpoint_step, read_summary

    workdir = pathlib.Path(workdir)
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return ""
    saved = checkpoint_step(workdir)  # Not the log's: see checkpoint_step.
    if saved and (read_summary(workdir) or {}).get("step") != saved:
        return ""
    rows = read_metrics(path)
    if saved:  # Rows past it (a kill before their checkpoint) are dropped on resume.
        rows = [r for r in rows if r.get("step", 0) <= saved]
    if any(r.get("split") == split for r in rows):
        report = time_to_quality(rows, thresholds, split)
        if report.all_reached:
            return f"every bound already reached by step {report.last_step}"
    if saved >= steps:
        return f"already trained to step {saved} (--steps={steps})"
    return ""


def plateau_split(splits: Iterable[str]) -> str | None:
    """The split the patience rule watches: `valid` if evaluated, else
    `test` (the periodic split of the Omniglot presets); None if neither."""
    splits = set(splits)
    return next((s for s in ("valid", "test") if s in splits), None)


def periodic_split(rows: Iterable[Mapping[str, Any]]) -> str:
    """The split a run's rows evaluate periodically, which the reporting
    tools read by default: `plateau_split` of the rows' splits (`valid` on
    MNIST, whose final evaluation adds a `test` row at the last step), or
    `test` before any evaluation."""
    return plateau_split(r.get("split") for r in rows) or "test"


def budget_label(steps: int) -> str:
    """A step budget as a column label: `5k`, `1.5k`, `500`."""
    return f"{steps / 1000:g}k" if steps >= 1000 else str(steps)


def plateaued(
    rows: Iterable[Mapping[str, Any]], patience: int, split: str
) -> int | None:
    """The patience rule of `TrainConfig.patience`: has `split`'s bound not
    improved for `patience` steps?

    Args:
        rows: the run's `metrics.jsonl` rows, in file order.
        patience: steps; > 0.
        split: the evaluation split watched (`plateau_split`).

    Returns:
        The step of the best (lowest; the earliest of ties) evaluation if the
        latest evaluation is at least `patience` steps after it, else None.

    Raises:
        ValueError: as `time_to_quality` for malformed rows.
    """
    points = curve(rows, split)
    if not points:
        return None
    best = min(points, key=lambda p: (p[1], p[0]))[0]
    return best if points[-1][0] - best >= patience else None


def plateaued_at(
    rows: Iterable[Mapping[str, Any]], step: int | None, patience: int
) -> tuple[str, int] | None:
    """The patience rule on a run restored at `step`: its rows after `step`
    (logged by a run stopped before their checkpoint) do not count, since the
    resumed run drops them.

    Args:
        rows: the run's `metrics.jsonl` rows, in file order.
        step: the restored (newest checkpoint's) step; None: every row (a
            run in progress).
        patience: steps; 0 turns the rule off.

    Returns:
        `(split, best step)` if the rule is met (`plateaued` on the watched
        split, `plateau_split`), else None.
    """
    rows = [r for r in rows if step is None or r.get("step", 0) <= step]
    split = plateau_split(r.get("split") for r in rows)
    if split is None or not patience:
        return None
    best = plateaued(rows, patience, split)
    return None if best is None else (split, best)


def with_patience(
    stop_when: Callable[[list[dict[str, Any]]], bool] | None,
    patience: int,
    metrics_path: str | os.PathLike,
) -> Callable[[list[dict[str, Any]]], bool] | None:
    """`stop_when` (`training.train_and_evaluate`'s hook), or also the rule
    of `TrainConfig.patience` if `patience` > 0: stop once the watched
    split's bound in `metrics_path` has not improved for `patience` steps."""
    if not patience:
        return stop_when

    def stop(records: list[dict[str, Any]]) -> bool:
        if stop_when is not None and stop_when(records):
            return True
        path = pathlib.Path(metrics_path)
        rows = read_metrics(path) if path.exists() else []
        return plateau_message(rows, patience) is not None

    return stop


def plateau_message(rows: Sequence[dict[str, Any]], patience: int) -> str | None:
    """A line saying why a run with the metrics rows `rows` has met the
    patience rule (printed), or None if it has not."""
    plateau = plateaued_at(rows, None, patience)
    if plateau is None:
        return None
    split, best = plateau
    message = (
        f"Early stop: the {split} bound has not improved since step {best} "
        f"(patience {patience} steps)"
    )
    print(message)
    return message


def _duration(seconds: float) -> str:
    """`4321.0` -> `1h12m`, `75.2` -> `1m15s`, `9.5` -> `9.5s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        s = int(round(seconds))
        return f"{s // 60}m{s % 60:02d}s"
    m = int(round(seconds / 60))
    return f"{m // 60}h{m % 60:02d}m"


def format_report(report: QualityReport, title: str = "") -> str:
    """The report as a table: a line per threshold, then the run's extent.

    Args:
        report: from `time_to_quality`.
        title: the first line's leading words (e.g. preset and workdir).

    Returns:
        Text without a trailing newline.
    """
    head = f"{title}: " if title else ""
    lines = [
        f"{head}{report.split} nll_bound, {report.evaluations} evaluations, "
        f"trained to step {report.last_step} in {_duration(report.train_seconds)} "
        f"of training steps ({report.train_seconds:.0f} s)",
        f"{'bound':<10}{'reached':>9}{'step':>8}{'nll_bound':>11}"
        f"{'train_s':>10}{'train':>9}",
    ]
    for r in report.reaches:
        lines.append(
            f"{'<= ' + f'{r.threshold:g}':<10}{'yes' if r.reached else 'no':>9}"
            f"{r.step:>8}{r.nll_bound:>11.3f}{r.train_seconds:>10.0f}"
            f"{_duration(r.train_seconds):>9}"
            + ("" if r.reached else "  (not reached: best so far)")
        )
    return "\n".join(lines)
