"""Fault injection: a training process killed with SIGKILL, or stopped with
SIGINT / SIGTERM, at a seeded step."""

import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, all_checkpoint_values, read_metrics, tiny, wait_all

from vma_tf import training

# Runs launchers.train and SIGKILLs its own process at a given point
# (`VMA_TEST_KILL_AT=STEP:PHASE`): "begin" just before step STEP runs,
# "save" just before checkpoint STEP is written. Deterministic: no polling
# of the child's progress under a wall-clock deadline.
DRIVER = r"""
import os, signal, sys
step, phase = os.environ["VMA_TEST_KILL_AT"].split(":")
step = int(step)
import tensorflow as tf
from vma_tf import training
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
if phase == "save":
    save = tf.train.CheckpointManager.save
    def killing_save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == step:
            kill()
        return save(self, checkpoint_number=checkpoint_number, **kwargs)
    tf.train.CheckpointManager.save = killing_save
else:
    begin = training._Monitor.on_epoch_begin
    def killing_begin(self, epoch, logs=None):
        if self._step() + 1 == step:
            kill()
        return begin(self, epoch, logs)
    training._Monitor.on_epoch_begin = killing_begin
from absl import app
from launchers import train
sys.argv[0] = "launchers.train"
app.run(train.main)
"""


# Sends its own process SIGNAL just before step STEP runs
# (`VMA_TEST_SIGNAL_AT=STEP:SIGNAL`), as a user's Ctrl-C or a machine's
# shutdown would, between two steps (inside a log interval). SIGSTOP first
# starts a process that continues this one (SIGCONT) PAUSE seconds later.
SIGNAL_DRIVER = r"""
import os, signal, subprocess, sys
step, name = os.environ["VMA_TEST_SIGNAL_AT"].split(":")
step = int(step)
from vma_tf import training
def signalling_begin(self, batch, logs=None):
    if self._step() + 1 == step:
        if name == "SIGSTOP":
            pause = os.environ["VMA_TEST_PAUSE"]
            subprocess.Popen(["sh", "-c", f"sleep {pause}; kill -CONT {os.getpid()}"])
        os.kill(os.getpid(), getattr(signal, name))
training._Monitor.on_train_batch_begin = signalling_begin
from absl import app
from launchers import train
sys.argv[0] = "launchers.train"
app.run(train.main, flags_parser=train.parse_flags)
"""


def launch(config_json, workdir, log, kill_at=None, signal_at=None, env=None):
    command = [sys.executable, "-m", "launchers.train"]
    env = {**os.environ, **(env or {})}
    if kill_at is not None:
        command = [sys.executable, "-c", DRIVER]
        env["VMA_TEST_KILL_AT"] = kill_at
    if signal_at is not None:
        command = [sys.executable, "-c", SIGNAL_DRIVER]
        env["VMA_TEST_SIGNAL_AT"] = signal_at
    args = [f"--config_json={config_json}", f"--workdir={workdir}", "--progress=false"]
    with open(log, "w") as f:
        return subprocess.Popen(
            [*command, *args],
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_a_stopped_training_does_not_count_the_pause_as_training_time(tmp_path):
    """`kill -STOP` ... `kill -CONT` inside a log interval (as the long runs
    are paused while CI runs): the interval's `steps_per_sec` leaves the
    pause out, so `time_to_quality.train_seconds` is the training's time; the
    run goes on to the end."""
    pause, steps, log_every = 6, 12, 4
    config = tiny(steps=steps, log_every=log_every, eval_every=steps, jit=False)
    config_json = tmp_path / "config.json"
    config_json.write_text(config.to_json())
    workdir, log = tmp_path / "run", tmp_path / "run.log"
    env = {"VMA_TEST_PAUSE": str(pause)}
    proc = launch(config_json, workdir, log, signal_at="6:SIGSTOP", env=env)
    assert wait_all([proc], timeout=300) == [0], log.read_text()[-3000:]
    rows = read_metrics(workdir)
    seconds = {
        r["step"]: log_every / r["steps_per_sec"] for r in rows if r["split"] == "train"
    }
    assert sorted(seconds) == [4, 8, 12]
    # The pause was in the interval of steps 5-8; its time is that of its
    # neighbours (a few tenths of a second), not the pause's seconds.
    assert seconds[8] < pause / 3, seconds
    assert seconds[8] < 3 * max(seconds[4], seconds[12]) + 0.5, seconds


def train_rows(workdir):
    return [
        (r["step"], r["loss"]) for r in read_metrics(workdir) if r["split"] == "train"
    ]


def final_values(workdir):
    path = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    values = all_checkpoint_values(path)
    del values["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]  # Counts saves.
    return path, values


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_sigkill_at_a_seeded_step_then_rerun_is_bit_equal(tmp_path):
    """`--deterministic`: a run killed with SIGKILL just before a step, and
    one killed just before a checkpoint is written, each at a seeded step
    inside a checkpoint interval (so steps past the last checkpoint are lost
    and run again), and rerun with the same command, end with every weight,
    Adam moment and seed state bit-equal to an uninterrupted run, with the
    same loss at every step (the lost steps' rows replaced, not doubled)."""
    steps, every = 60, 7
    config = tiny(
        steps=steps,
        log_every=1,
        eval_every=steps,
        checkpoint_every=every,
        deterministic=True,
    )
    config_json = tmp_path / "config.json"
    config_json.write_text(config.to_json())
    rng = random.Random(15)  # Seeded: the same kill points on every run.
    begin = every * rng.randint(1, 5) + rng.randint(2, every - 1)  # Not after a save.
    kills = {"begin": begin, "save": every * rng.randint(2, 6)}
    print(f"kill points: {kills}")
    runs = {name: tmp_path / name for name in ("full", *kills)}
    procs = [launch(config_json, runs["full"], tmp_path / "full.log")] + [
        launch(config_json, runs[p], tmp_path / f"{p}.log", f"{at}:{p}")
        for p, at in kills.items()
    ]
    codes = wait_all(procs, timeout=300)
    assert codes == [0, -signal.SIGKILL, -signal.SIGKILL], [
        (tmp_path / f"{n}.log").read_text()[-3000:] for n in runs
    ]
    path_a, a = final_values(runs["full"])
    assert path_a.endswith(f"ckpt-{steps}") and len(a) > 30
    for phase, at in kills.items():
        part = runs[phase]
        done = at - 1 if phase == "begin" else at
        last_checkpoint = (at - 1) // every * every
        assert done - last_checkpoint >= 1, (phase, at)  # Steps are lost.
        assert max(step for step, _ in train_rows(part)) == done
        rerun = launch(config_json, part, tmp_path / f"{phase}_rerun.log")
        assert wait_all([rerun], timeout=300) == [0]
        log = (tmp_path / f"{phase}_rerun.log").read_text()
        assert f"at step {last_checkpoint}" in log, log[-3000:]
        path_b, b = final_values(part)
        assert path_b.endswith(f"ckpt-{steps}") and a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{phase} {name}")
        assert train_rows(runs["full"]) == train_rows(part), phase


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_sigint_and_sigterm_checkpoint_the_current_step_then_rerun_is_bit_equal(
    tmp_path,
):
    """Ctrl-C (SIGINT) and a shutdown (SIGTERM) at a seeded step inside a log
    interval: the run checkpoints the step it was running, logs the partial
    interval, prints one line and exits 130 / 143; the rerun resumes at that
    step (none lost) and ends bit-equal to an uninterrupted run. `--steps` is
    not a multiple of `--log_every` (the last interval is shorter)."""
    steps, log_every = 23, 4
    config = tiny(
        steps=steps,
        log_every=log_every,
        eval_every=24,  # Only the final evaluation.
        checkpoint_every=8,
        deterministic=True,
        jit=False,  # The exactness under test is the checkpoint's, not XLA's.
    )
    config_json = tmp_path / "config.json"
    config_json.write_text(config.to_json())
    rng = random.Random(16)  # Seeded: the same stop points on every run.
    stops = {
        name: log_every * rng.randint(1, 4) + rng.randint(1, log_every - 1)
        for name in ("SIGINT", "SIGTERM")
    }
    print(f"stop points: {stops}")
    runs = {name: tmp_path / name for name in ("full", *stops)}
    procs = [launch(config_json, runs["full"], tmp_path / "full.log")] + [
        launch(config_json, runs[n], tmp_path / f"{n}.log", signal_at=f"{at}:{n}")
        for n, at in stops.items()
    ]
    codes = wait_all(procs, timeout=300)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in runs}
    assert codes == [0, 128 + signal.SIGINT, 128 + signal.SIGTERM], logs
    for name, at in stops.items():
        lines = [line for line in logs[name].splitlines() if line.startswith(name)]
        assert lines == [
            (
                f"{name}: checkpointed step {at} in {runs[name] / 'checkpoints'}; "
                "rerun the same command to resume"
            )
        ], logs[name][-3000:]
        assert "Traceback" not in logs[name], logs[name][-3000:]
        assert max(step for step, _ in train_rows(runs[name])) == at
        # The partial interval's row too (written by the signal handler).
        rows = read_metrics(runs[name])
        assert all("learning_rate" in r for r in rows if r["split"] == "train")
    reruns = [launch(config_json, runs[n], tmp_path / f"{n}.rerun.log") for n in stops]
    assert wait_all(reruns, timeout=300) == [0, 0]
    path_a, a = final_values(runs["full"])
    full_rows = dict(train_rows(runs["full"]))
    assert sorted(full_rows) == [4, 8, 12, 16, 20, 23]
    for name, at in stops.items():
        log = (tmp_path / f"{name}.rerun.log").read_text()
        assert f"at step {at}" in log, log[-3000:]
        path_b, b = final_values(runs[name])
        assert path_a.endswith(f"ckpt-{steps}") and path_b.endswith(f"ckpt-{steps}")
        assert a.keys() == b.keys() and len(a) > 30
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
        # Intervals the stop did not split have the same mean loss.
        rows = dict(train_rows(runs[name]))
        for step, loss in full_rows.items():
            if not step - log_every < at < step:
                assert rows[step] == loss, (name, step)


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_a_signal_in_an_evaluation_step_keeps_its_evaluation(tmp_path):
    """SIGTERM during the last step of an interval that ends in an
    evaluation: that step is evaluated and checkpointed, as in an
    uninterrupted run, before the run stops there (stopping at once lost the
    evaluation row, and with it a patience decision, for good)."""
    config = tiny(steps=16, log_every=4, eval_every=8, checkpoint_every=8, jit=False)
    config_json = tmp_path / "config.json"
    config_json.write_text(config.to_json())
    run = tmp_path / "run"
    proc = launch(config_json, run, tmp_path / "log", signal_at="8:SIGTERM")
    assert wait_all([proc], timeout=300) == [128 + signal.SIGTERM]
    log = (tmp_path / "log").read_text()
    assert f"SIGTERM: checkpointed step 8 in {run / 'checkpoints'}" in log, log[-3000:]
    rows = read_metrics(run)
    assert [(r["split"], r["step"]) for r in rows if r["step"] == 8] == [
        ("train", 8),
        ("valid", 8),
    ]
    assert max(r["step"] for r in rows) == 8


def test_multi_worker_stop_is_decided_by_the_reduced_signal_alone():
    """Under multi_worker every worker must agree whether to stop after a
    step. A signal landing while the all-reduce runs (the reduction saw 0)
    counts at the next reduction, not this one: stopping now would start
    this worker's checkpoint collectives while the others step on (the
    mismatched-collective crash of CI on fbf37ed)."""
    monitor = training._Monitor.__new__(training._Monitor)

    def reduce_then_signal(value):
        monitor.signal = signal.SIGTERM  # Arrives mid-reduction.
        return value  # The others sent 0 too.

    monitor.any_worker = reduce_then_signal
    assert not monitor._signalled()
    monitor.any_worker = lambda value: value
    assert monitor._signalled() and monitor.signal == signal.SIGTERM
    assert not monitor.from_peer

    peer = training._Monitor.__new__(training._Monitor)
    peer.any_worker = lambda value: max(value, signal.SIGINT)
    assert peer._signalled() and peer.signal == signal.SIGINT and peer.from_peer


def test_no_pickle_loading_anywhere():
    """Untrusted files are never unpickled: no `allow_pickle=True`, no pickle
    module in the library or the launchers."""
    offenders = []
    for path in [*(REPO / "vma_tf").rglob("*.py"), *(REPO / "launchers").rglob("*.py")]:
        text = path.read_text()
        for needle in ("allow_pickle=True", "import pickle", "pickle.load", "dill"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders
