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

from absl import app, flags

# Defines --preset, --workdir, --config_json and the config flags (shared).
from launchers import train as _train_flags  # noqa: F401
from launchers.common import check_common, fail, parse_flags

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "tuner", "random", ["random", "bayesian", "hyperband"], "keras-tuner oracle."
)
flags.DEFINE_integer("max_trials", 10, "Number of trials (a cap for hyperband).")
flags.DEFINE_integer(
    "steps_per_trial",
    1000,
    "Training steps of one trial (hyperband: of its longest trials).",
)
flags.DEFINE_integer("tuner_seed", 0, "Seed of the oracle's choices.", lower_bound=0)


def _base_config(configs):
    if FLAGS.config_json:
        base = configs.load_json(FLAGS.config_json)
    else:
        base = configs.get_preset(FLAGS.preset)
    for name in ("steps", "init_from"):
        if getattr(FLAGS, name) is not None:
            raise configs.ConfigError(
                f"--{name} is not used by launchers.tune (see --steps_per_trial)"
            )
    if FLAGS.strategy == "multi_worker":
        raise configs.ConfigError(
            "--strategy=multi_worker is not supported for tuning; distribute "
            "trials with KERASTUNER_* workers instead"
        )
    return configs.override(base, **{k: getattr(FLAGS, k) for k in configs.FLAG_FIELDS})


def main(argv):
    check_common(argv, FLAGS.workdir, "the search directory")
    from vma_tf import configs
    from vma_tf.data.files import DataError
    from vma_tf.errors import NonFiniteError
    from vma_tf.workdir import atomic_write, preflight

    workdir = pathlib.Path(FLAGS.workdir).expanduser().absolute()
    try:
        if FLAGS.max_trials < 1:
            raise configs.ConfigError(f"--max_trials={FLAGS.max_trials} must be >= 1")
        base = _base_config(configs)
        every = base.train.log_every
        if FLAGS.steps_per_trial < 1 or FLAGS.steps_per_trial % every:
            raise configs.ConfigError(
                f"--steps_per_trial={FLAGS.steps_per_trial} must be a positive "
                f"multiple of --log_every={every}"
            )
        settings = {
            "tuner": FLAGS.tuner,
            "max_trials": FLAGS.max_trials,
            "steps_per_trial": FLAGS.steps_per_trial,
            "tuner_seed": FLAGS.tuner_seed,
            "base": base.to_dict(),
        }
        settings = json.loads(json.dumps(settings))
        _check_settings(configs, workdir, settings)
        # Every input check before TensorFlow loads: one clean error line.
        from vma_tf import tuning

        for config in _corner_configs(configs, tuning, base):
            configs.validate(config)
        preflight(_corner_configs(configs, tuning, base)[0], workdir / "trials" / "_")
        tuner = tuning.make_tuner(
            base,
            workdir,
            tuner=FLAGS.tuner,
            max_trials=FLAGS.max_trials,
            steps_per_trial=FLAGS.steps_per_trial,
            seed=FLAGS.tuner_seed,
        )
        if tuning.is_chief():
            atomic_write(workdir / "search.json", json.dumps(settings, indent=2) + "\n")
        tuner.search()
    except (configs.ConfigError, DataError, NonFiniteError) as e:
        fail(str(e))
    if not tuning.is_chief():
        print(f"tuner {os.environ.get('KERASTUNER_TUNER_ID')}: search finished")
        return
    results = tuning.write_results(tuner, base)
    for row in results["trials"]:
        values = ", ".join(
            f"{k[3:]}={v}" for k, v in row.items() if k.startswith("hp/")
        )
        print(
            f"trial {row['trial_id']} {row['status']}: nll_bound={row['objective']} ({values})"
        )
    print(f"trials: {workdir / 'trials.csv'}")
    print(f"best config: {results['best_config']}")


def _corner_configs(configs, tuning, base):
    """The base config with each searched value in turn, at the trial budget."""
    import dataclasses

    budget = dataclasses.replace(
        base.train,
        steps=FLAGS.steps_per_trial,
        eval_every=FLAGS.steps_per_trial,
        checkpoint_every=FLAGS.steps_per_trial,
    )
    out = [dataclasses.replace(base, train=budget)]
    for name, choices in tuning.search_space(base).items():
        for value in choices:
            out.append(tuning.apply_values(out[0], {name: value}))
    return out


def _check_settings(configs, workdir: pathlib.Path, settings) -> None:
    saved = workdir / "search.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        for key, value in settings.items():
            if old.get(key) != value:
                raise configs.ConfigError(
                    f"--workdir={workdir} holds a search with other settings "
                    f"({key}); use another --workdir or the same flags to continue"
                )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
