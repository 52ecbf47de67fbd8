"""What the protocols share: the restored `Run`, the options base classes and
the summaries of streamed bounds.

Neither this module nor a protocol module imports TensorFlow when it is
imported (each protocol imports it when called), so `launchers.evaluate` reads
the registry and refuses a bad command line before TensorFlow starts. The
protocols' only imports of experiment-layer code (`load_run`, `sample_grid`,
`samples_title`) are in this module.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self

import numpy as np

from vma_tf.configs import Config, ConfigError
from vma_tf.workdir import atomic_write

# Streams of evaluation data, distinct from training (0) and periodic eval (1).
RECALL_STREAM, ROBUST_STREAM, CLASSIFY_STREAM = 11, 12, 13

# The per-example diagnostics of a streamed bound (`evaluation.StreamedBound`).
BOUND_KEYS = ("nll_bound", "kl_a", "kl_z", "recon")

# What every protocol returns: JSON-ready results and `name -> figure writer`.
Figures = dict[str, Callable[[pathlib.Path], None]]
Result = tuple[dict, Figures]


@dataclasses.dataclass
class Run:
    """A restored training run.

    Attributes:
        workdir: the run directory.
        config: its `config.json`.
        model: the model restored from the newest checkpoint.
        data: the run's `vma_tf.data.experiments` data (final evaluation sets,
            `x_shape`, sample memory).
        step: the training step of the checkpoint.
    """

    workdir: pathlib.Path
    config: Config
    model: Any
    data: Any
    step: int


def load(workdir, dtype_policy: str | None = None) -> Run:
    """Restores the newest checkpoint of `workdir`.

    Args:
        workdir: a directory written by `training.train_and_evaluate`.
        dtype_policy: Keras dtype policy to build the model under (e.g.
            `"mixed_bfloat16"`); None keeps the global one.

    Returns:
        The `Run`.

    Raises:
        vma_tf.errors.WorkdirError: no config or no checkpoint in `workdir`.
    """
    from vma_tf.experiment import load_run  # Imports TensorFlow.

    config, model, data, step = load_run(workdir, dtype_policy)
    return Run(pathlib.Path(workdir).expanduser(), config, model, data, step)


def sample_grid(model, memory, rows: int, cols: int, seed: int, x_hw) -> np.ndarray:
    """`experiment.sample_grid`: sample images `[rows, cols, H, W]`."""
    from vma_tf.experiment import sample_grid as grid  # Imports TensorFlow.

    return grid(model, memory, rows, cols, seed, x_hw)


def samples_title(name: str, model, memory) -> str:
    """`experiment.samples_title`: the title training gives samples.png."""
    from vma_tf.experiment import samples_title as title  # Imports TensorFlow.

    return title(name, model, memory)


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the protocols' options: frozen, and refusing unknown names.

    A subclass is a frozen dataclass whose fields (with defaults, documented
    under `Attributes:`) are the protocol's options; it sets `protocol` to the
    protocol's registry name.
    """

    protocol: ClassVar[str] = ""
    # The protocol takes a sequence of runs instead of one run.
    several_runs: ClassVar[bool] = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in field order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def create(cls, **options) -> Self:
        """`cls(**options)`, refusing a name that is not an option (`check`)."""
        cls.check(options)
        return cls(**options)

    @classmethod
    def check(cls, names: Iterable[str]) -> None:
        """Refuses a name that is not an option.

        Raises:
            ConfigError: one line naming the option, the protocol and the
                options it takes.
        """
        allowed = cls.names()
        for name in names:
            if name not in allowed:
                raise ConfigError(
                    f"{name!r} is not an option of protocol {cls.protocol!r}; "
                    f"it takes: {', '.join(allowed)}"
                )

    @classmethod
    def resolve(cls, options: Self | None, keywords: Mapping[str, Any]) -> Self:
        """The options a protocol function was called with.

        Args:
            options: an instance of `cls`, or None for the defaults.
            keywords: options given as keywords (override `options`).

        Returns:
            An instance of `cls`.

        Raises:
            ConfigError: `options` of another protocol, or an unknown keyword.
        """
        if options is None:
            return cls.create(**keywords)
        if type(options) is not cls:
            raise ConfigError(
                f"protocol {cls.protocol!r} takes {cls.__name__}, not "
                f"{type(options).__name__}"
            )
        cls.check(keywords)
        return dataclasses.replace(options, **keywords)


@dataclasses.dataclass(frozen=True)
class BoundOptions(Options):
    """Options of the protocols that stream the K-sample bound L_K.

    Attributes:
        num_samples: K of the bound (importance samples per example).
        num_examples: how many examples to evaluate; 0 keeps the protocol's
            default (what an example is depends on the protocol).
        chunk_size: importance samples per chunk of the streamed bound (bounds
            memory).
        seed: evaluation seed (the same seed gives the same numbers).
        jit: compile with XLA.
    """

    num_samples: int = 1000
    num_examples: int = 0
    chunk_size: int = 100
    seed: int = 0
    jit: bool = True


def summary(values: Mapping[str, list]) -> dict:
    """Mean and standard error of each list of per-example arrays.

    Args:
        values: `name -> [array [B_i], ...]`.

    Returns:
        `{name: {"mean", "stderr"}}` over the concatenated arrays.
    """
    from vma_tf.evaluation import mean_and_stderr

    out = {}
    for k, v in values.items():
        mean, se = mean_and_stderr(np.concatenate(v))
        out[k] = {"mean": mean, "stderr": se}
    return out


def bound_over(
    stream, batches: Iterable[dict], num_samples: int, seed: int, key: str = "x"
) -> dict:
    """Summary of the L_K diagnostics over batches.

    Args:
        stream: an `evaluation.StreamedBound`.
        batches: dicts with targets `key` (`[B, ...]`) and optionally
            `"memory"` (`[M, ...]`); batch `i` is seeded `(seed, i)`.
        num_samples: K.
        seed: evaluation seed.
        key: the targets' key.

    Returns:
        `{name: {"mean", "stderr"} for name in BOUND_KEYS, "nll_bound_by_batch":
        {"mean", "stderr"}, "num_examples"}`: "stderr" over targets, and
        `nll_bound_by_batch`'s over batches (`evaluation.clustered_stderr`:
        a batch's targets share its memory, so they are not independent).
        If the batches carry `"is_copy"` (`[B]` bool: the target is a copy of
        an image in memory), also `"copies"` and `"fresh"` (`{"nll_bound":
        {"mean", "stderr"}, "num_examples"}` of those targets and the
        others; no `"nll_bound"` if there is none) and `"copy_fraction"`.
    """
    from vma_tf.evaluation import clustered_stderr

    values = {k: [] for k in BOUND_KEYS}
    is_copy = []
    n = 0
    for i, batch in enumerate(batches):
        res = stream(batch[key], batch.get("memory"), num_samples, seed=(seed, i))
        for k, v in values.items():
            v.append(res[k])
        n += len(res["nll_bound"])
        if "is_copy" in batch:
            is_copy.append(np.asarray(batch["is_copy"], bool))
    out = summary(values)
    by_batch = {
        "mean": out["nll_bound"]["mean"],
        "stderr": clustered_stderr(values["nll_bound"]),
    }
    out = {**out, "nll_bound_by_batch": by_batch, "num_examples": n}
    if is_copy:
        copy = np.concatenate(is_copy)
        nll = np.concatenate(values["nll_bound"])
        for name, mask in (("copies", copy), ("fresh", ~copy)):
            some = summary({"nll_bound": [nll[mask]]}) if mask.any() else {}
            out[name] = {**some, "num_examples": int(mask.sum())}
        out["copy_fraction"] = float(copy.mean())
    return out


class CellCache:
    """The finished cells of a long protocol, on disk, so that a rerun resumes.

    A protocol of many independent cells (each seeded by itself, so that its
    value does not depend on which cells ran before it: `gmn_table`'s 28
    (C, T) cells, hours at K = 1000 on a CPU, and `robustness`' points)
    keeps each finished cell in `<workdir>/eval/.<protocol>.cells.json` under
    a key of everything the value depends on: the checkpoint's step, the
    model's dtype policy and the options. A rerun with the same key takes the
    saved cells (JSON floats round-trip exactly, so the result equals an
    uninterrupted run's); any other key, or an unreadable file, starts
    afresh. `finish` removes the file. A workdir it cannot write (a run
    archived read-only, evaluated with `--out` elsewhere) gets one warning on
    stderr and the evaluation goes on without saving. Two evaluations of one
    protocol on one run at once share the file: each keeps its own numbers,
    but only the last writer's cells are kept for a rerun.

    Attributes:
        path: the file.
    """

    def __init__(self, run: Run, options: Options):
        """Reads the saved cells of `run` under `options`, if their key matches.

        Args:
            run: the evaluated run (`workdir`, `step`, `model`).
            options: the protocol's options (the `protocol` names the file).
        """
        self.path = run.workdir / "eval" / f".{options.protocol}.cells.json"
        policy = getattr(getattr(run.model, "dtype_policy", None), "name", None)
        key = {"step": run.step, "dtype_policy": policy}
        key["options"] = dataclasses.asdict(options)
        self._key = json.loads(json.dumps(key))  # Tuples as lists, as read back.
        self._cells = {}
        self._saving = True
        try:
            saved = json.loads(self.path.read_text())
            if saved["key"] == self._key:
                self._cells = dict(saved["cells"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # No file, or not ours: start afresh.

    def __call__(self, name: str, compute: Callable[[], dict]) -> dict:
        """The saved cell `name`, or `compute()` saved before it is returned."""
        if name not in self._cells:
            self._cells[name] = json.loads(json.dumps(compute()))
            if self._saving:
                self._save()
        return dict(self._cells[name])  # The caller may add keys.

    def _save(self) -> None:
        saved = {"key": self._key, "cells": self._cells}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(saved))
        except OSError as e:  # Not the evaluation's fault: it goes on.
            self._saving = False
            print(
                f"warning: cannot keep finished cells in {self.path} "
                f"({e.strerror or e}); the evaluation goes on, but a rerun "
                "starts afresh",
                file=sys.stderr,
            )

    def finish(self) -> None:
        """Removes the file (the protocol's result is complete)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # A read-only run directory (see `_save`).


def require(run: Run, protocol: str, ok: bool, what: str) -> None:
    """Refuses a run of the wrong kind for `protocol` (one-line `ConfigError`).

    Args:
        run: the run.
        protocol: the protocol's name.
        ok: whether `run` is of the kind `protocol` needs.
        what: that kind, e.g. `"an MNIST recall VMA run"`.
    """
    if not ok:
        raise ConfigError(
            f"--protocol={protocol} needs {what}; {run.workdir} is a "
            f"{run.config.name!r} run ({run.config.model.kind}, "
            f"{run.config.data.dataset}, task={run.config.data.task})"
        )
