r"""Reproduce the paper's results at scale: one command per row, resumable.

  python -m launchers.reproduce                          # list rows and commands
  python -m launchers.reproduce --action=run --rows=fewshot
  python -m launchers.reproduce --action=report          # paper | ours | steps | hours

Each row (`vma_tf.reproduction.ROWS`) trains its runs in --runs_dir/NAME
with `launchers.train` (to --steps, or until the periodic test bound has not
improved for --patience steps) and evaluates them with `launchers.evaluate`.
`run` executes exactly the commands `list` prints, one after the other,
skipping a run already trained to the rule and an evaluation already made
at its runs' current steps with the row's options (a report written to
WORKDIR/eval with other options, e.g. `--classes=1`, is redone); stop it at
any time (SIGTERM / Ctrl-C checkpoints the step) and rerun it to continue.
`report` reads the run directories only: per run the steps, the hours of
training steps and the periodic bound at 5k/10k/20k/50k steps; per
evaluation its headline numbers beside the paper's; then one table of every
number the paper prints, ours, how far behind and whether within issue 17's
target (3 nats, 5 points).
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import shlex
import signal
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

from launchers.common import (  # noqa: E402
    build_config,
    define_train_flags,
    fail,
    given_fields,
    parse_flags,
)
from vma_tf import configs, reproduction  # noqa: E402
from vma_tf import time_to_quality as ttq  # noqa: E402
from vma_tf.configs.schema import PRECISIONS  # noqa: E402
from vma_tf.errors import ConfigError, WorkdirError  # noqa: E402
from vma_tf.workdir import check_workdir  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "action",
    "list",
    ["list", "run", "report"],
    "list: print each row's commands; run: train and evaluate (resumable); "
    "report: the rows' numbers from --runs_dir.",
)
flags.DEFINE_list(
    "rows",
    ["all"],
    f"Rows: {', '.join(reproduction.ROWS_BY_NAME)}, or all.",
)
flags.DEFINE_list(
    "runs",
    [],
    "Only these runs of the rows (names as in --action=list's workdirs) and the "
    "evaluations of them alone; e.g. one per process to train two runs at once.",
)
flags.DEFINE_string("runs_dir", "~/vma_runs/long", "Directory of the rows' runs.")
flags.DEFINE_string(
    "figure",
    None,
    "With --action=report: also draw the runs' budget curves into this PNG.",
)
flags.DEFINE_integer(
    "steps", reproduction.STEPS, "Training steps of each run (the step rule's cap)."
)
flags.DEFINE_integer(
    "patience",
    reproduction.PATIENCE,
    "Stop a run once its periodic bound has not improved for this many steps "
    "(0: train to --steps).",
)
flags.DEFINE_integer(
    "lr_drop_step",
    0,
    "Pass --lr_drop_step to every training: from this step on Adam runs at "
    "1e-4; a run in progress takes it on resume. 0: the flag is left out, so "
    "a new run keeps the paper's constant rate and a run in progress the "
    "schedule it has.",
    lower_bound=0,
)

flags.DEFINE_enum(
    "precision",
    reproduction.PRECISION,
    list(PRECISIONS),
    "Training precision of the runs (evaluations run in float32): "
    "mixed_bfloat16 (1.7-1.8x faster on a CPU with AMX, within 1 nat of "
    "float32 at 5000 steps) or float32 (the paper's setting).",
)

flags.DEFINE_integer(
    "threads",
    0,
    "TensorFlow threads of each training and evaluation process (intra- and "
    "inter-op; 0: TF's default, all cores). Two lanes on two cores: 1 each "
    "(6-15 %% more steps/s).",
    lower_bound=0,
)


def _shown(argv) -> str:
    """The command as `list` prints it and `run` runs it."""
    env = reproduction.thread_env(FLAGS.threads)
    prefix = "".join(f"{k}={v} " for k, v in env.items())
    return prefix + "python -m " + shlex.join(argv)


def _train_command(t, runs_dir: pathlib.Path):
    return reproduction.train_command(
        t, runs_dir, FLAGS.steps, FLAGS.patience, FLAGS.precision, FLAGS.lr_drop_step
    )


def _commands(rows, runs_dir: pathlib.Path):
    """`(kind, Training or Evaluation, argv after python -m)` in run order."""
    out = []
    chosen = set(FLAGS.runs)
    for t in reproduction.trainings(rows):
        if not chosen or t.name in chosen:
            out.append(("train", t, _train_command(t, runs_dir)))
    for row in rows:
        for e in row.evaluations:
            if not chosen or set(e.runs) <= chosen:
                argv = reproduction.evaluate_command(e, runs_dir)
                out.append(("evaluate", e, argv))
    return out


def _list(rows, runs_dir: pathlib.Path) -> None:
    for row in rows:
        print(f"{row.name}: {row.paper}")
        for t in row.trainings:
            print("  " + _shown(_train_command(t, runs_dir)))
        for e in row.evaluations:
            print("  " + _shown(reproduction.evaluate_command(e, runs_dir)))


def _check_trained_as_asked(name: str, argv: list[str], runs_dir: pathlib.Path) -> None:
    """Fails unless the run `runs_dir/name`, which `_run` skips as trained,
    was trained as its `launchers.train` arguments `argv` ask: the checks a
    resume makes (config.json's model and data, the learning-rate schedule,
    `--init_from`), which a skipped run would otherwise escape (an older
    model's run under the row's name; a drop asked of a run trained
    without one)."""
    fv = flags.FlagValues()
    define_train_flags(fv)
    fv(["launchers.train", *argv[1:]])
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # A resume's notes.
            check_workdir(runs_dir / name, build_config(fv), given_fields(fv))
    except ConfigError as e:
        fail(f"{name} is trained, but not as asked: {e}")


def _run(rows, runs_dir: pathlib.Path) -> None:
    seen = set()
    for kind, what, argv in _commands(rows, runs_dir):
        if kind == "evaluate":
            key = tuple(argv)
            if key in seen:
                continue
            seen.add(key)
            if reproduction.evaluated(what, runs_dir) is not None:
                print(f"skip {what.protocol} of {','.join(what.runs)}: up to date")
                continue
        else:
            rule = reproduction.step_rule(what, FLAGS.steps, FLAGS.patience)
            done = reproduction.trained_to(runs_dir / what.name, *rule)
            if done:
                _check_trained_as_asked(what.name, argv, runs_dir)
                print(f"skip training {what.name}: {done}")
                continue
            base = what.base
            if base and not reproduction.trained_to(
                runs_dir / base, FLAGS.steps, FLAGS.patience
            ):
                fail(
                    f"{what.name} continues {base}: train {base} to the step rule first"
                )
        command = [sys.executable, "-m", *argv]
        print("+ " + _shown(argv), flush=True)
        env = {**os.environ, **reproduction.thread_env(FLAGS.threads)}
        code = call(command, env)
        if code in STOPPED:  # The command checkpointed and said so.
            sys.exit(code)
        if code:
            fail(f"exit {code}: python -m {shlex.join(argv)}")


# Exit codes of a command stopped by SIGINT / SIGTERM (128 + the signal).
STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def call(command: list[str], env: dict[str, str]) -> int:
    """Runs `command` to its end; returns its exit code.

    A SIGINT or SIGTERM to this process is passed on to the command, once,
    and its end awaited, so a training checkpoints its step however long
    that takes. The command runs in its own session: a terminal's Ctrl-C
    (sent to the whole foreground group) reaches it only through here, not
    twice (a second signal stops a training at once), and a stopped driver
    leaves no training behind.
    """
    child = subprocess.Popen(command, env=env, start_new_session=True)
    forward = lambda signum, frame: child.send_signal(signum)
    before = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        rows = reproduction.select(FLAGS.rows)
    except ValueError as e:
        fail(f"--rows={','.join(FLAGS.rows)}: {e}")
    names = [t.name for t in reproduction.trainings(rows)]
    unknown = [n for n in FLAGS.runs if n not in names]
    if unknown:
        fail(
            f"--runs={','.join(FLAGS.runs)}: {', '.join(unknown)} not a run of "
            f"--rows={','.join(FLAGS.rows)} ({', '.join(names)})"
        )
    if FLAGS.steps < 1:
        fail(f"--steps={FLAGS.steps} must be >= 1")
    if FLAGS.patience < 0:
        fail(f"--patience={FLAGS.patience} must be >= 0")
    for t in reproduction.trainings(rows):  # As each training would refuse it.
        if FLAGS.lr_drop_step and not t.base:
            preset = configs.get_preset(t.preset)
            try:
                configs.validate(
                    configs.override(
                        preset, steps=FLAGS.steps, lr_drop_step=FLAGS.lr_drop_step
                    )
                )
            except ConfigError as e:
                fail(f"run {t.name}: {e}")
    runs_dir = pathlib.Path(FLAGS.runs_dir).expanduser().absolute()
    figure = None
    if FLAGS.figure:
        if FLAGS.action != "report":
            fail(f"--figure applies to --action=report only, not {FLAGS.action}")
        try:
            from vma_tf import plotting

            figure = plotting.check_figure_file("--figure", FLAGS.figure)
        except WorkdirError as e:
            fail(str(e))
    try:
        _act(rows, runs_dir, figure)
    except ttq.MetricsError as e:  # A run's metrics.jsonl is not a log.
        fail(str(e))


def _act(rows, runs_dir: pathlib.Path, figure) -> None:
    if FLAGS.action == "report":
        if not runs_dir.is_dir():
            fail(f"--runs_dir={FLAGS.runs_dir} is not a directory")
        print(reproduction.report_rows(rows, runs_dir), end="")
        if FLAGS.figure:
            from vma_tf import plotting

            curves, papers = reproduction.curves(rows, runs_dir)
            plotting.budget_curves(figure, curves, papers)
            print(f"wrote {figure}")
    elif FLAGS.action == "run":
        runs_dir.mkdir(parents=True, exist_ok=True)
        _run(rows, runs_dir)
    else:
        _list(rows, runs_dir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
