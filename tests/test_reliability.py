"""Fault injection: a training process killed with SIGKILL at a seeded step."""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import tensorflow as tf
from helpers import REPO, all_checkpoint_values, tiny, wait_all

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


def launch(config_json, workdir, log, kill_at=None):
    command = [sys.executable, "-m", "launchers.train"]
    env = dict(os.environ)
    if kill_at is not None:
        command = [sys.executable, "-c", DRIVER]
        env["VMA_TEST_KILL_AT"] = kill_at
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


def train_rows(workdir):
    text = (workdir / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]


def final_values(workdir):
    path = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    values = all_checkpoint_values(path)
    del values["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]  # Counts saves.
    return path, values


def test_sigkill_at_a_seeded_step_then_rerun_is_bit_equal(tmp_path):
    """`--deterministic`: a run killed with SIGKILL at a seeded step (just
    before a step, or just before a checkpoint is written) and rerun with the
    same command ends with every weight, Adam moment and seed state bit-equal
    to an uninterrupted run, with the same loss at every step."""
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
    rng = random.Random(15)  # Seeded: the same kill point on every run.
    phase = rng.choice(["begin", "save"])
    kill_step = rng.randint(8, 45) if phase == "begin" else every * rng.randint(2, 6)
    print(f"kill point: {phase} of step {kill_step}")
    last_checkpoint = (kill_step - (phase == "begin")) // every * every
    if phase == "save":
        last_checkpoint -= every
    full, part = tmp_path / "full", tmp_path / "part"
    procs = [
        launch(config_json, full, tmp_path / "full.log"),
        launch(config_json, part, tmp_path / "part.log", f"{kill_step}:{phase}"),
    ]
    codes = wait_all(procs, timeout=300)
    assert codes == [0, -signal.SIGKILL], [
        (tmp_path / f"{n}.log").read_text()[-3000:] for n in ("full", "part")
    ]
    done = kill_step - 1 if phase == "begin" else kill_step
    assert max(step for step, _ in train_rows(part)) == done

    rerun = launch(config_json, part, tmp_path / "rerun.log")
    assert wait_all([rerun], timeout=300) == [0], (tmp_path / "rerun.log").read_text()
    log = (tmp_path / "rerun.log").read_text()
    assert f"at step {last_checkpoint}" in log, log[-3000:]

    path_a, a = final_values(full)
    path_b, b = final_values(part)
    assert path_a.endswith(f"ckpt-{steps}") and path_b.endswith(f"ckpt-{steps}")
    assert a.keys() == b.keys() and len(a) > 30
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert train_rows(full) == train_rows(part)


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
