r"""Hyperparameter search: `python -m launchers.tune --preset=NAME --workdir=DIR`.

Searches learning rate, L2 weight decay, matching-space size, K, similarity
(and channels for conv presets) around the preset (see `vma_tf.tuning`) with
keras-tuner; every trial is a `launchers.train`-style run of
`--steps_per_trial` steps in `DIR/trials/trial_ID/`. The other flags of
`launchers.train` (except `--steps` and `--init_from`) set the base config.
Writes `DIR/trials.json`, `DIR/trials.csv` and `DIR/best_config.json`; train
the best config with

  python -m launchers.train --config_json=DIR/best_config.json --workdir=RUN

Rerunning the same command continues the search. Example:

  python -m launchers.tune --preset=mnist_recall --memory_size=16 \
      --tuner=bayesian --max_trials=12 --steps_per_trial=2000 \
      --workdir=~/vma_runs/tune_recall16

Distributed search: run the same command once as the oracle chief and once
per worker, all with `KERASTUNER_ORACLE_IP` / `KERASTUNER_ORACLE_PORT` (the
chief's address) and `KERASTUNER_TUNER_ID=chief` resp. `tuner0`, `tuner1`,
... and the same `--workdir` on a shared filesystem.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app, flags

# Defines --preset, --workdir, --config_json and the config flags (shared).
from launchers import train as _train_flags  # noqa: F401
from launchers.common import (
    build_config,
    check_common,
    config_overrides,
    fail,
    import_tensorflow_quietly,
    parse_flags,
)
from vma_tf.configs import FIELDS_BY_NAME, TUNERS, ConfigError
from vma_tf.tuning_space import search_space

FLAGS = flags.FLAGS

flags.DEFINE_enum("tuner", "random", list(TUNERS), "keras-tuner oracle.")
flags.DEFINE_integer("max_trials", 10, "Number of trials (a cap for hyperband).")
flags.DEFINE_integer(
    "steps_per_trial",
    1000,
    "Training steps of one trial (hyperband: of its longest trials).",
)
flags.DEFINE_integer("tuner_seed", 0, "Seed of the oracle's choices.", lower_bound=0)


_NOT_USED = "is not used by launchers.tune (see --steps_per_trial)"


def _base_config(new_search: bool):
    base = build_config(refuse={"train.steps": _NOT_USED, "train.init_from": _NOT_USED})
    given = config_overrides()
    for name, choices in search_space(base).items():
        key = f"{FIELDS_BY_NAME[name].section}.{name}"
        # A search begun before this check resumes with its own flags.
        if new_search and key in given:
            raise ConfigError(
                f"--{given[key][0]} is searched by launchers.tune (every trial "
                f"sets one of {', '.join(map(str, choices))}); leave it out"
            )
    if base.train.strategy == "multi_worker":
        raise ConfigError(
            "--strategy=multi_worker is not supported for tuning; distribute "
            "trials with KERASTUNER_* workers instead"
        )
    return base


def main(argv):
    check_common(argv, FLAGS.workdir, "the search directory")
    from vma_tf.data.files import DataError
    from vma_tf.errors import Interrupted, NonFiniteError

    workdir = pathlib.Path(FLAGS.workdir).expanduser().absolute()
    try:
        base, settings = _settings(workdir)
        # Every input check so far ran before TensorFlow loads.
        import_tensorflow_quietly()
        from vma_tf import tuning

        results = tuning.run_search(base, workdir, settings)
    except (ConfigError, DataError, NonFiniteError) as e:
        fail(str(e))
    except Interrupted as e:  # SIGINT / SIGTERM: the trial's step is saved.
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    if results is None:
        print(f"tuner {os.environ.get('KERASTUNER_TUNER_ID')}: search finished")
    else:
        print(tuning.format_results(results, workdir))


def _settings(workdir: pathlib.Path):
    """`(base config, search settings)` from the flags (no TensorFlow)."""
    if FLAGS.max_trials < 1:
        raise ConfigError(f"--max_trials={FLAGS.max_trials} must be >= 1")
    base = _base_config(new_search=not (workdir / "search.json").exists())
    every = base.train.log_every
    if FLAGS.steps_per_trial < 1 or FLAGS.steps_per_trial % every:
        raise ConfigError(
            f"--steps_per_trial={FLAGS.steps_per_trial} must be a positive "
            f"multiple of --log_every={every}"
        )
    if FLAGS.tuner == "hyperband" and FLAGS.steps_per_trial < 2 * every:
        raise ConfigError(
            f"--tuner=hyperband needs --steps_per_trial >= 2 * --log_every "
            f"({2 * every}): with {FLAGS.steps_per_trial} its short and long "
            "trials would train the same steps"
        )
    settings = {
        "tuner": FLAGS.tuner,
        "max_trials": FLAGS.max_trials,
        "steps_per_trial": FLAGS.steps_per_trial,
        "tuner_seed": FLAGS.tuner_seed,
        "base": base.to_dict(),
    }
    settings = json.loads(json.dumps(settings))
    saved = workdir / "search.json"
    old = json.loads(saved.read_text()) if saved.exists() else settings
    for key, value in settings.items():
        if old.get(key) != value:
            raise ConfigError(
                f"--workdir={workdir} holds a search with other settings "
                f"({key}); use another --workdir or the same flags to continue"
            )
    return base, settings


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
