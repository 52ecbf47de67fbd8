r"""Time to quality: train a preset until its test bound reaches given values,
then print the training steps and time each took.

  python -m launchers.time_to_quality --preset=omniglot_fewshot --channels=32 \
      --quality=100,90 --steps=10000 --workdir=~/vma_runs/ttq_vma
  python -m launchers.time_to_quality --notrain --quality=100,90 \
      --workdir=~/vma_runs/omni_c32_r4          # report on an existing run

Training is `launchers.train`'s (the same config flags, resumable: rerun the
same command to continue) and stops at the first evaluation that reaches
every bound, or at --steps. A bound can only be seen reached at an
evaluation (every --eval_every steps) of the run's periodic split (`valid`
on MNIST, `test` on Omniglot; --split picks another the run evaluates
periodically). `--notrain` only reads DIR's metrics.jsonl. Definitions
(first step, training time, resumed runs): `vma_tf.time_to_quality`.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

# No TensorFlow at import: bad flags and --notrain never load it.
from launchers.common import (  # noqa: E402
    build_config,
    check_common,
    config_overrides,
    define_config_flags,
    fail,
    given_fields,
    import_tensorflow_quietly,
    parse_flags,
)
from vma_tf import time_to_quality as ttq  # noqa: E402

FLAGS = flags.FLAGS

define_config_flags(
    "omniglot_fewshot",
    short=("steps", "seed", "channels", "decoder_refine", "eval_every", "data_dir"),
)
flags.DEFINE_string(
    "workdir",
    None,
    "Run directory (created; resumed if it holds a checkpoint; read with --notrain).",
)
flags.DEFINE_list(
    "quality", [], "Bounds in nats, e.g. 100,90: report when nll_bound <= each."
)
flags.DEFINE_string(
    "split",
    None,
    "Evaluation split whose nll_bound is compared; one the run evaluates "
    "periodically. Default: its first (valid on MNIST, test on Omniglot).",
)
flags.DEFINE_boolean(
    "train", True, "Train (or resume) first; --notrain only reports on --workdir."
)
flags.DEFINE_boolean("progress", True, "Show a progress bar while training.")


def _report_only() -> pathlib.Path:
    """Checks of `--notrain`; returns the workdir holding metrics.jsonl."""
    try:
        given = [name for name, _ in config_overrides().values()]
    except ValueError as e:  # ConfigError: a field set twice.
        fail(str(e))
    given += [n for n in ("preset", "config_json") if FLAGS[n].present]
    if given:
        fail(
            f"--{given[0]} does not apply with --notrain: the run in --workdir "
            "is only read"
        )
    workdir = pathlib.Path(FLAGS.workdir).expanduser()
    if not (workdir / "metrics.jsonl").is_file():
        fail(
            f"--workdir={FLAGS.workdir} has no metrics.jsonl (not a training run, "
            "or not started); drop --notrain to train it"
        )
    return workdir


def _train(thresholds: tuple[float, ...]) -> tuple[pathlib.Path, str]:
    """Trains (or resumes) the flags' config in --workdir until every bound
    is reached on the split or --steps; skips training when the log says
    either is done. Returns the workdir and the split."""
    from vma_tf.data.files import DataError
    from vma_tf.errors import ConfigError, Interrupted, NonFiniteError
    from vma_tf.workdir import check_data_files, preflight

    try:
        config = build_config()
        config, workdir = preflight(
            config, FLAGS.workdir, check_data=False, given=given_fields()
        )
        split = _split(config)
        try:
            done = ttq.already_done(workdir, thresholds, config.train.steps, split)
        except ValueError as e:  # A bad line in metrics.jsonl.
            fail(f"--workdir={FLAGS.workdir}: {e}")
        if done:
            print(f"{done}; not training")
            return workdir, split
        import_tensorflow_quietly()
        check_data_files(config)
        from vma_tf import training

        training.train_and_evaluate(
            config,
            workdir,
            progress=FLAGS.progress,
            stop_when=ttq.stop_when(thresholds, split),
        )
    except (ConfigError, DataError, NonFiniteError) as e:
        fail(str(e))
    except Interrupted as e:  # SIGINT / SIGTERM: the current step is saved.
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    return workdir, split


def _split(config) -> str:
    """--split, checked against the splits `config` evaluates periodically
    (before any training), or the first of them."""
    from vma_tf.configs import periodic_splits

    splits = periodic_splits(config)
    if FLAGS.split is None:
        return splits[0]
    if FLAGS.split not in splits:
        fail(
            f"--split={FLAGS.split} is not evaluated periodically by this run "
            f"(it evaluates {', '.join(splits)}); use one of them"
        )
    return FLAGS.split


def _title(workdir: pathlib.Path) -> str:
    """`NAME (DIR)`, the name from the run's config.json if readable."""
    try:
        name = json.loads((workdir / "config.json").read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return str(workdir)
    return f"{name} ({workdir})"


def main(argv):
    check_common(argv, FLAGS.workdir, "the run to train or to report on")
    try:
        thresholds = ttq.check_thresholds(FLAGS.quality)
    except ValueError as e:
        fail(f"--quality={','.join(FLAGS.quality)} {e}")
    if FLAGS.split is not None and not FLAGS.split:
        fail("--split must name an evaluation split, e.g. test")
    if FLAGS.train:
        workdir, split = _train(thresholds)
    else:
        workdir, split = _report_only(), FLAGS.split
    try:
        rows = ttq.read_metrics(workdir / "metrics.jsonl")
        split = split or ttq.periodic_split(rows)
        report = ttq.time_to_quality(rows, thresholds, split)
    except ValueError as e:
        fail(f"--workdir={FLAGS.workdir}, --split={split}: {e}")
    print(ttq.format_report(report, _title(workdir)))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
