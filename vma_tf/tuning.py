"""Hyperparameter search with keras-tuner over the trainer's own configs.

`VMAHyperModel.config(hp)` maps keras-tuner hyperparameters onto the `Config`
dataclass; `build(hp)` hands that config to the same model builder the
trainer uses (`vma_tf.modeling.builders.build_model`), so there is no second
model definition. `VMATuner.run_trial` trains the trial's config with
`vma_tf.training.train_and_evaluate` for the trial's step budget in its own
workdir, `DIR/trials/trial_ID/`, and reports the validation `nll_bound` at
K = `OBJECTIVE_SAMPLES` (8) for every trial, whatever K it trained with
(minimised; L_K tightens with K, so each trial's own bound would favour
the largest K searched).

Search space (`search_space(config)`):

  learning_rate  {1e-4, 3e-4}             (the paper's two values)
  weight_decay   {0, 1e-4, 3e-4}          (L2, all parameters except M)
  embed_dim      {64, 128, 256}           (matching space of q(a|x), p(a))
  similarity     {normalized, dot, cosine}
  num_samples    {2, 4, 8}                (K)
  channels       {16, 32, 64}             (conv presets only)

`embed_dim` and `similarity` are left out for the memory-less `vae` kind.

Distributed search: keras-tuner runs the same command as the oracle chief
(`KERASTUNER_TUNER_ID=chief`, serving the oracle over gRPC at
`KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`) or as a worker
(`KERASTUNER_TUNER_ID=tuner0`, `tuner1`, ... with the same IP and port). The
chief only serves the oracle; workers run trials. All processes need the same
`DIR` on a shared filesystem (trial workdirs, Hyperband's warm starts, the
oracle's `DIR/keras_tuner/`). The chief (or a single process) writes, after
the search:

  DIR/trials.json, DIR/trials.csv   one row per trial: id, status, values,
                                    objective, other metrics, tuner id,
                                    steps, workdir
  DIR/best_config.json              the base config with the best trial's
                                    values (`launchers.train --config_json`)

Reproducibility: the oracle is seeded (`seed`), every trial trains with the
base config's training seed, and a trial's result is a pure function of its
values and step budget (training data and samples are seeded by step).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import shutil
from typing import Any

import keras_tuner

from vma_tf import time_to_quality as ttq
from vma_tf.configs import (
    FIELDS_BY_NAME,
    TUNERS,
    Config,
    ConfigError,
    override,
    validate,
    x_shape,
)
from vma_tf.data.files import DataError
from vma_tf.errors import Interrupted, NonFiniteError
from vma_tf.tuning_space import OBJECTIVE_SAMPLES, search_space
from vma_tf.workdir import atomic_write, preflight

OBJECTIVE = "nll_bound"
HYPERBAND_MAX_EPOCHS = 3  # Hyperband (factor 3) rungs: 1/3 and all steps.


class StopSearch(keras_tuner.errors.FatalError):
    """An error of a trial that ends the search, not the trial.

    keras-tuner marks a trial whose `run_trial` raises any other exception
    as failed and goes on with the next one. A signal (`Interrupted`: the
    step is checkpointed) and an error of the setup (`ConfigError`, which
    includes `WorkdirError`, and `DataError`) must stop the search instead:
    the trial then stays the oracle's ongoing trial, and rerunning the same
    command retries it from its checkpoint. `run_search` re-raises `error`.

    Attributes:
        error: the trial's exception.
    """

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def apply_values(config: Config, values: dict[str, Any]) -> Config:
    """`config` with searched values (keys of `search_space`, config field
    names) replaced; other keys (keras-tuner's `tuner/...`) are ignored."""
    return override(config, **{k: v for k, v in values.items() if k in FIELDS_BY_NAME})


def trial_steps(steps_per_trial: int, log_every: int, epochs: int | None) -> int:
    """Step budget of a trial: all of `steps_per_trial`, or for Hyperband the
    fraction `epochs / HYPERBAND_MAX_EPOCHS`, rounded up to `log_every`."""
    if epochs is None:
        return steps_per_trial
    steps = steps_per_trial * epochs / HYPERBAND_MAX_EPOCHS
    return min(steps_per_trial, math.ceil(steps / log_every) * log_every)


class VMAHyperModel(keras_tuner.HyperModel):
    """Hyperparameters -> `Config` -> the trainer's model builder.

    Args:
        base: the config every trial starts from (preset plus flags).
        steps_per_trial: step budget of one trial (the largest for Hyperband).
    """

    def __init__(self, base: Config, steps_per_trial: int):
        super().__init__(name=base.name)
        self.base = base
        self.steps_per_trial = steps_per_trial

    def config(self, hp: keras_tuner.HyperParameters) -> Config:
        """The trial's config: searched values, step budget, one eval at the end.

        Args:
            hp: hyperparameters; `tuner/epochs` (Hyperband) scales the budget.

        Returns:
            A validated `Config`.
        """
        values = {
            name: hp.Choice(name, list(choices))
            for name, choices in search_space(self.base).items()
        }
        t = self.base.train
        epochs = hp.values.get("tuner/epochs")
        steps = trial_steps(self.steps_per_trial, t.log_every, epochs)
        config = apply_values(self.base, values)
        config = dataclasses.replace(
            config,
            train=dataclasses.replace(
                config.train,
                steps=steps,
                eval_every=steps,
                checkpoint_every=steps,
                keep_checkpoints=1,
                init_from=None,
            ),
        )
        return validate(config)

    def build(self, hp: keras_tuner.HyperParameters):
        """The (unbuilt) Keras model of `config(hp)`, from the trainer's builder."""
        from vma_tf.modeling.builders import build_model

        config = self.config(hp)
        return build_model(config.model, x_shape(config), seed=config.train.seed)


class VMATuner(keras_tuner.Tuner):
    """Runs each trial as a `train_and_evaluate` job in `DIR/trials/trial_ID`.

    Args:
        oracle: a keras-tuner oracle (objective: `nll_bound`, minimised).
        hypermodel: `VMAHyperModel`.
        workdir: the search directory `DIR`.
        **kwargs: `keras_tuner.Tuner` arguments.
    """

    def __init__(self, oracle, hypermodel: VMAHyperModel, workdir, **kwargs):
        self.workdir = pathlib.Path(workdir)
        super().__init__(
            oracle,
            hypermodel,
            directory=str(self.workdir),
            project_name="keras_tuner",
            **kwargs,
        )

    def trial_dir(self, trial_id: str) -> pathlib.Path:
        return self.workdir / "trials" / f"trial_{trial_id}"

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        """Trains the trial's config; returns its final validation metrics.

        Returns:
            `{"nll_bound": ..., "kl_a": ..., "kl_z": ..., "recon": ...,
            "trial_nll_bound": ..., "train_nll_bound": ..., "steps": ...,
            "steps_per_sec": ...}`: the objective `nll_bound` (and the KLs and
            reconstruction) is L_K at K = `OBJECTIVE_SAMPLES` for every trial
            on the first periodic evaluation split (`valid` on MNIST; Omniglot
            presets have no validation split: `test`); `trial_nll_bound` is
            the trial's own last evaluation there, at its own K.
        """
        import keras

        from vma_tf import training

        hp = trial.hyperparameters
        config = self.hypermodel.config(hp)
        workdir = self.trial_dir(trial.trial_id)
        previous = hp.values.get("tuner/trial_id")
        if previous and not workdir.exists():  # Hyperband: continue that run.
            source = self.trial_dir(previous)
            if (source / "checkpoints").is_dir():
                # Copied whole or not at all: a copy cut short (a signal) is
                # removed by the rerun, which copies again.
                partial = workdir.with_name(workdir.name + ".copying")
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(
                    source,
                    partial,
                    ignore=shutil.ignore_patterns(".lock", "tuning.json"),
                )
                partial.rename(workdir)
        keras.backend.clear_session()
        try:
            summary = training.train_and_evaluate(config, workdir, progress=False)
        except NonFiniteError as e:  # These values diverge: a failed trial.
            raise keras_tuner.errors.FailedTrialError(str(e)) from e
        except (Interrupted, ConfigError, DataError) as e:
            raise StopSearch(e) from e
        split = "valid" if "valid" in summary["metrics"] else _first_eval(summary)
        train = summary["metrics"].get("train", {})
        bound = objective_bound(workdir, split)
        # The last periodic evaluation of the split (summary's `test` of an
        # Omniglot run is the final one, on the whole test set).
        periodic = ttq.curve(ttq.read_metrics(workdir / "metrics.jsonl"), split)
        metrics = {
            OBJECTIVE: bound["nll_bound"]["mean"],
            "kl_a": bound["kl_a"]["mean"],
            "kl_z": bound["kl_z"]["mean"],
            "recon": bound["recon"]["mean"],
            "trial_nll_bound": float(periodic[-1][1]),
            "train_nll_bound": float(train.get("nll_bound", math.nan)),
            "steps": float(summary["step"]),
            "steps_per_sec": float(summary["steps_per_sec"] or 0.0),
        }
        record = {
            "trial_id": trial.trial_id,
            "tuner_id": self.tuner_id,
            "values": _searched(hp.values),
            "objective_split": split,
            "metrics": metrics,
            "workdir": str(workdir),
        }
        atomic_write(workdir / "tuning.json", json.dumps(record, indent=2) + "\n")
        return metrics

    # The trainer writes its own checkpoints; keras-tuner's model saving is
    # not used.
    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):
        raise NotImplementedError(
            f"load the trained weights from {self.trial_dir(trial.trial_id)}"
        )


def objective_bound(workdir, split: str) -> dict[str, Any]:
    """L_K at K = `OBJECTIVE_SAMPLES` of a trained run on its periodic
    evaluation set `split` (the same examples for every trial).

    Args:
        workdir: the trial's run directory.
        split: a periodic evaluation split of the run (`valid`, `test`).

    Returns:
        `{metric: {"mean", "stderr"}, "num_examples", "num_samples"}` for
        `nll_bound`, `kl_a`, `kl_z`, `recon` (`evaluation.nll_protocol`).
    """
    from vma_tf import evaluation
    from vma_tf.experiment import load_run

    config, model, data, _ = load_run(workdir)
    evals = {split: data.evals[split]}
    return evaluation.nll_protocol(
        model, evals, OBJECTIVE_SAMPLES, jit=config.train.jit
    )[split]


def _first_eval(summary: dict[str, Any]) -> str:
    for split in summary["metrics"]:
        if split != "train":
            return split
    raise ValueError("the trial ran no evaluation")


def _searched(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def make_oracle(tuner: str, max_trials: int, seed: int) -> keras_tuner.Oracle:
    """The keras-tuner oracle `tuner` (random, bayesian or hyperband).

    Args:
        seed: `--tuner_seed` (>= 0). The oracle gets `seed + 1`: keras-tuner
            draws a random seed for 0 (`seed or random.randint(...)`), which
            left the default search unseeded.
    """
    objective = keras_tuner.Objective(OBJECTIVE, direction="min")
    seed = seed + 1
    if tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed
        )
    if tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            objective=objective, max_trials=max_trials, seed=seed
        )
    if tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            objective=objective,
            max_epochs=HYPERBAND_MAX_EPOCHS,
            factor=3,
            hyperband_iterations=1,
            seed=seed,
        )
        oracle.max_trials = max_trials  # Caps the brackets' trials too.
        return oracle
    raise ConfigError(
        f"--tuner={tuner!r} is unknown; choose one of {', '.join(TUNERS)}"
    )


def make_tuner(
    base: Config,
    workdir,
    tuner: str = "random",
    max_trials: int = 10,
    steps_per_trial: int = 1000,
    seed: int = 0,
) -> VMATuner:
    """A `VMATuner` searching around `base`; resumes a search in `workdir`."""
    hypermodel = VMAHyperModel(base, steps_per_trial)
    return VMATuner(make_oracle(tuner, max_trials, seed), hypermodel, workdir)


def trials_table(tuner: VMATuner) -> list[dict[str, Any]]:
    """One row per trial of the (chief's) oracle, in creation order."""
    rows = []
    oracle = tuner.oracle
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        record_path = tuner.trial_dir(trial_id) / "tuning.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        metrics = {
            name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics
        }
        rows.append(
            {
                "trial_id": trial_id,
                "status": str(trial.status),
                "tuner_id": record.get("tuner_id"),
                **{
                    f"hp/{k}": v
                    for k, v in _searched(trial.hyperparameters.values).items()
                },
                "objective": trial.score,
                **{f"metric/{k}": v for k, v in sorted(metrics.items())},
                "workdir": str(tuner.trial_dir(trial_id)),
            }
        )
    return rows


def write_results(tuner: VMATuner, base: Config) -> dict[str, Any]:
    """Writes `trials.json`, `trials.csv` and `best_config.json` into `DIR`.

    `best_config.json` is `base` (with its full training schedule) with the
    best trial's searched values.

    Returns:
        `{"trials": rows, "best": best row or None, "best_config": path}`.
    """
    rows = trials_table(tuner)
    workdir = tuner.workdir
    atomic_write(workdir / "trials.json", json.dumps(rows, indent=2) + "\n")
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(workdir / "trials.csv", buffer.getvalue())
    done = [
        r for r in rows if r["objective"] is not None and "COMPLETED" in r["status"]
    ]
    best = min(done, key=lambda r: r["objective"]) if done else None
    path = None
    if best is not None:
        values = {k[3:]: v for k, v in best.items() if k.startswith("hp/")}
        config = validate(apply_values(base, values))
        path = workdir / "best_config.json"
        atomic_write(path, config.to_json() + "\n")
    return {"trials": rows, "best": best, "best_config": str(path) if path else None}


def is_chief() -> bool:
    """Whether this process writes the results (chief, or no distribution)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return True
    return "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


def corner_configs(base: Config, steps_per_trial: int) -> list[Config]:
    """The base config with each searched value in turn, at the trial budget."""
    budget = dataclasses.replace(
        base.train,
        steps=steps_per_trial,
        eval_every=steps_per_trial,
        checkpoint_every=steps_per_trial,
    )
    out = [dataclasses.replace(base, train=budget)]
    for name, choices in search_space(base).items():
        for value in choices:
            out.append(apply_values(out[0], {name: value}))
    return out


def run_search(
    base: Config, workdir: pathlib.Path, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """Validates every searched value at the trial budget, preflights the
    first trial, then searches (resuming a search in `workdir`).

    Args:
        base: the config every trial starts from.
        workdir: the search directory.
        settings: `tuner`, `max_trials`, `steps_per_trial`, `tuner_seed`
            (and anything else to record): written to `workdir/search.json`.

    Returns:
        `write_results(...)` on the chief, None on other tuner processes.
    """
    steps = settings["steps_per_trial"]
    corners = corner_configs(base, steps)
    for config in corners:
        validate(config)
    preflight(corners[0], workdir / "trials" / "_")
    tuner = make_tuner(
        base,
        workdir,
        tuner=settings["tuner"],
        max_trials=settings["max_trials"],
        steps_per_trial=steps,
        seed=settings["tuner_seed"],
    )
    if is_chief():
        atomic_write(workdir / "search.json", json.dumps(settings, indent=2) + "\n")
    # keras-tuner reloads a search only if the tuner's own file exists, which
    # it writes when a trial ends: written now, a rerun after a stop in the
    # first trial retries that trial (with its values) instead of a new one.
    tuner.save()
    try:
        tuner.search()
    except StopSearch as e:
        raise e.error from None
    except RuntimeError as e:  # keras-tuner: too many failed trials in a row.
        if not str(e).startswith("Number of consecutive failures"):
            raise
        lines = [line for line in str(e).splitlines() if line.strip()]
        # keras-tuner raises before it saves the last trial: the table of the
        # trials so far is written here (a rerun stops on the same trial).
        written = ""
        if is_chief():
            write_results(tuner, base)
            written = f"; the trials so far: {workdir / 'trials.csv'}"
        raise ConfigError(
            f"the search stopped: {lines[0].rstrip('.')}; the last: {lines[-1]}"
            f"{written}"
        ) from None
    return write_results(tuner, base) if is_chief() else None


def format_results(results: dict[str, Any], workdir: pathlib.Path) -> str:
    """One line per trial, then where the table and the best config are."""
    lines = []
    for row in results["trials"]:
        values = ", ".join(
            f"{k[3:]}={v}" for k, v in row.items() if k.startswith("hp/")
        )
        lines.append(
            f"trial {row['trial_id']} {row['status']}: "
            f"nll_bound={row['objective']} ({values})"
        )
    lines.append(f"trials: {workdir / 'trials.csv'}")
    lines.append(f"best config: {results['best_config']}")
    return "\n".join(lines)
