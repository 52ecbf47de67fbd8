"""Fault injection: a training process killed with SIGKILL at a random step."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from helpers import all_checkpoint_values, tiny

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(config_json, workdir, log):
    with open(log, "w") as f:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launchers.train",
                f"--config_json={config_json}",
                f"--workdir={workdir}",
                "--progress=false",
            ],
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def train_rows(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # A line being written.
            break
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]


def final_values(workdir):
    path = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    values = all_checkpoint_values(path)
    del values["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]  # Counts saves.
    return path, values


def test_sigkill_at_a_random_step_then_rerun_is_bit_equal(tmp_path):
    """`--deterministic`: a run killed with SIGKILL at a random step and rerun
    with the same command ends with every weight, Adam moment and seed state
    bit-equal to an uninterrupted run, with the same loss at every step."""
    steps = 60
    config = tiny(
        steps=steps,
        log_every=1,
        eval_every=steps,
        checkpoint_every=7,
        deterministic=True,
    )
    config_json = tmp_path / "config.json"
    config_json.write_text(config.to_json())
    # After the first checkpoint (step 7): the row of step 8 is written only
    # once the step-7 callback, which saves, has returned.
    kill_at = random.Random().randint(8, 45)  # Printed on failure.
    full, part = tmp_path / "full", tmp_path / "part"
    procs = [
        launch(config_json, full, tmp_path / "full.log"),
        launch(config_json, part, tmp_path / "part.log"),
    ]
    deadline = time.monotonic() + 300
    while not any(step >= kill_at for step, _ in train_rows(part)):
        assert procs[1].poll() is None, (tmp_path / "part.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"no step {kill_at} in 300 s"
        time.sleep(0.02)
    os.kill(procs[1].pid, signal.SIGKILL)
    assert procs[1].wait(60) == -signal.SIGKILL
    killed_after = max(step for step, _ in train_rows(part))
    assert killed_after < steps, f"step {killed_after}: finished before the kill"
    assert procs[0].wait(300) == 0, (tmp_path / "full.log").read_text()[-3000:]

    rerun = launch(config_json, part, tmp_path / "rerun.log")
    assert rerun.wait(300) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    log = (tmp_path / "rerun.log").read_text()
    assert "Resuming from " in log, f"killed at {killed_after}, no resume:\n{log}"
    resumed = int(log.split("Resuming from ")[1].split(" at step ")[1].split()[0])
    print(f"killed at step {killed_after} (target {kill_at}), resumed at {resumed}")
    assert 7 <= resumed <= killed_after and resumed % 7 == 0

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
