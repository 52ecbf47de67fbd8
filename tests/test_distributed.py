"""Distributed training: `--strategy=multi_worker` (2 CPU workers on 127.0.0.1)
and `mirrored` (2 logical CPUs) against a single-device run."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import all_checkpoint_values, reserved_ports, wait_all

from vma_tf import configs, distribution, training

# `make test` (--dist loadgroup): one xdist worker runs this whole file, so its
# module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("test_distributed")

REPO = pathlib.Path(__file__).resolve().parents[1]

# The tiny run of every test here: 8 targets (4 per replica), |M| = 8.
FLAGS = {
    "preset": "mnist_recall",
    "log_every": 10,
    "eval_every": 20,
    "checkpoint_every": 20,
    "eval_batches": 2,
    "memory_size": 8,
    "batch_size": 8,
    "eval_memory_size": 0,
    "jit": False,
}

# Splits the CPU into 2 logical devices if `two_cpus` (before TF starts).
LOGICAL_CPUS = r"""
import tensorflow as tf
if two_cpus:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# Runs launchers.train in a subprocess; keeps a worker's temporary directory
# (normally deleted) so the test can read its checkpoint, and optionally
# splits the CPU into 2 logical devices for MirroredStrategy.
DRIVER = (
    r"""
import sys, types
two_cpus = sys.argv.pop(1) == "1"
"""
    + LOGICAL_CPUS
    + r"""
if two_cpus:
    mirrored = tf.distribute.MirroredStrategy
    tf.distribute.MirroredStrategy = lambda: mirrored(["/cpu:0", "/cpu:1"])
from vma_tf import training
training.shutil = types.SimpleNamespace(rmtree=lambda *a, **k: None)
import os
if os.environ.get("VMA_TEST_REPLICA_SEEDS"):  # The seed of every step's loss.
    from vma_tf.modeling.models import LatentVariableModel
    loss_and_terms = LatentVariableModel.loss_and_terms
    def logged(self, x, memory, seed, training=True, **kwargs):
        context = tf.distribute.get_replica_context()
        tf.print("replica seed", "train" if training else "test",
                 self.optimizer.iterations, context.replica_id_in_sync_group,
                 seed, output_stream=sys.stdout)
        return loss_and_terms(self, x, memory, seed, training, **kwargs)
    LatentVariableModel.loss_and_terms = logged
if os.environ.get("VMA_TEST_NAN_STEPS"):  # Poison these (1-based) steps.
    from vma_tf.modeling.models import LatentVariableModel
    steps = [int(s) - 1 for s in os.environ["VMA_TEST_NAN_STEPS"].split(",")]
    objective = LatentVariableModel.objective
    def poisoned(self, terms, *args, **kwargs):
        value = objective(self, terms, *args, **kwargs)
        it = tf.cast(self.optimizer.iterations, tf.int32)
        bad = tf.reduce_any(tf.equal(it, steps))
        if os.environ.get("VMA_TEST_NAN_REPLICA"):  # Only on this replica.
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            bad = tf.logical_and(
                bad, tf.equal(replica, int(os.environ["VMA_TEST_NAN_REPLICA"]))
            )
        return tf.where(bad, tf.constant(float("nan"), value.dtype), value)
    LatentVariableModel.objective = poisoned
if os.environ.get("VMA_TEST_SIGTERM_STARTING"):  # SIGTERM before the restore.
    import signal
    restore = training._restore
    def signalled_restore(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return restore(*args, **kwargs)
    training._restore = signalled_restore
if os.environ.get("VMA_TEST_SIGTERM_AT"):  # SIGTERM just before this step.
    import signal
    at = int(os.environ["VMA_TEST_SIGTERM_AT"])
    def signalling_begin(self, batch, logs=None):
        if self._step() + 1 == at:
            os.kill(os.getpid(), signal.SIGTERM)
    training._Monitor.on_train_batch_begin = signalling_begin
from absl import app
from launchers import train
sys.argv[0] = "launchers.train"
app.run(train.main)
"""
)


def flag_args(workdir, **overrides):
    values = {**FLAGS, **overrides}
    args = [
        f"--{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in values.items()
    ]
    return [*args, f"--workdir={workdir}", "--progress=false"]


def start(args, log_path, env=None, two_cpus=False):
    # The kept worker directories go under the test's tmp_path, not /tmp.
    tmpdir = log_path.parent / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = {"TMPDIR": str(tmpdir), **(env or {})}
    with open(log_path, "w") as log:  # The child keeps its own descriptor.
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, "1" if two_cpus else "0", *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def start_workers(
    workdirs, ports, tmp_path, tag, steps, env_of_worker=None, **overrides
):
    """One `multi_worker` process per workdir (worker i on `ports[i]`, with
    the environment variables `env_of_worker[i]`), with `FLAGS` and
    `overrides`; returns the processes and their log paths."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    for i, workdir in enumerate(workdirs):
        tf_config = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}}
        )
        logs.append(tmp_path / f"{tag}_worker{i}.log")
        procs.append(
            start(
                flag_args(workdir, steps=steps, strategy="multi_worker", **overrides),
                logs[-1],
                env={"TF_CONFIG": tf_config, **(env_of_worker or {}).get(i, {})},
            )
        )
    return procs, logs


def run_multi_worker(workdir, tmp_path, tag, steps, **overrides):
    # The ports stay reserved until the workers have exited (no race).
    with reserved_ports(2) as ports:
        procs, logs = start_workers(
            [workdir] * 2, ports, tmp_path, tag, steps, **overrides
        )
        codes = wait_all(procs, timeout=300)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(t[-3000:] for t in texts)
    return texts


def checkpoint_values(ckpt_dir):
    path = tf.train.latest_checkpoint(str(ckpt_dir))
    assert path is not None, ckpt_dir
    return path, {
        n: tf.train.load_variable(path, n)
        for n, _ in tf.train.list_variables(path)
        if n.startswith(("model/", "optimizer/"))
    }


def train_rows(workdir, split="train"):
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["split"] == split}


def worker_dir(log_text):
    match = re.search(r"worker 1: not the chief, writing into (\S+)", log_text)
    assert match, log_text[-2000:]
    return pathlib.Path(match.group(1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-device run of 40 steps, and 2 workers for 40 steps (the
    command as a user would run it; resuming is the SIGTERM test's)."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    single = tmp_path / "single"
    config = configs.override(
        configs.get_preset("mnist_recall"),
        **{k: v for k, v in FLAGS.items() if k != "preset"},
        steps=40,
    )
    training.train_and_evaluate(config, single, progress=False)
    multi = tmp_path / "multi"
    texts = run_multi_worker(multi, tmp_path, "multi", steps=40)
    return {"single": single, "multi": multi, "texts": texts}


def assert_replicas_equal(workdir, worker_log, step):
    """The chief's latest checkpoint (in `workdir`) and worker 1's (in the
    directory its log names) are both at `step`, with identical weights and
    optimizer state."""
    chief_path, chief = checkpoint_values(workdir / "checkpoints")
    worker_path, worker = checkpoint_values(worker_dir(worker_log) / "checkpoints")
    assert chief_path.endswith(f"ckpt-{step}"), chief_path
    assert worker_path.endswith(f"ckpt-{step}"), worker_path
    assert chief.keys() == worker.keys() and len(chief) > 30
    unequal = [n for n in chief if not np.array_equal(chief[n], worker[n])]
    assert not unequal, unequal


def test_multi_worker_two_processes_match_single_worker(runs):
    """2 workers x 1 CPU: identical replicas, chief-only files, losses within
    noise of a single-device run."""
    single, multi, texts = (runs[k] for k in ("single", "multi", "texts"))
    assert "XLA off" not in texts[0]  # --jit=false here: nothing to fall back from.

    # Only the chief wrote into the workdir.
    assert (multi / "summary.json").is_file()
    assert not any(p.name.startswith("vma_worker") for p in multi.iterdir())
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["step"] == 40 and summary["steps_this_run"] == 40

    # Both replicas end with identical weights and optimizer state.
    assert_replicas_equal(multi, texts[1], 40)

    # The loss curve matches the single-device run with the same global batch
    # (the replicas draw other samples: equal within noise, not bitwise).
    a, b = train_rows(single), train_rows(multi)
    assert sorted(a) == sorted(b) == [10, 20, 30, 40]
    for step in a:
        x, y = a[step]["nll_bound"], b[step]["nll_bound"]
        print(f"step {step}: single {x:.2f} multi-worker {y:.2f}")
        assert abs(x - y) < 0.05 * x, (step, x, y)
    va, vb = train_rows(single, "valid")[40], train_rows(multi, "valid")[40]
    assert abs(va["nll_bound"] - vb["nll_bound"]) < 0.05 * va["nll_bound"]


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_sigterm_to_one_worker_stops_both_at_one_checkpointed_step(tmp_path):
    """A preempted worker (SIGTERM to worker 1 alone) does not leave the chief
    waiting in collectives: both checkpoint the same step, exit 143, and the
    same commands resume from that step (worker 1 from the chief's
    checkpoint) with the replicas still identical."""
    workdir, metrics = tmp_path / "run", tmp_path / "run" / "metrics.jsonl"
    with reserved_ports(2) as ports:
        procs, logs = start_workers([workdir] * 2, ports, tmp_path, "sig", 100000)
        deadline = time.monotonic() + 240
        while not (metrics.is_file() and '"split": "train"' in metrics.read_text()):
            alive = all(p.poll() is None for p in procs)
            if not alive or time.monotonic() > deadline:
                wait_all(procs, timeout=1)
                pytest.fail("\n".join(log.read_text()[-2000:] for log in logs))
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        codes = wait_all(procs, timeout=120)
    texts = [log.read_text() for log in logs]
    assert codes == [128 + signal.SIGTERM] * 2, "\n".join(t[-2000:] for t in texts)
    found = re.search(r"SIGTERM to another worker: checkpointed step (\d+)", texts[0])
    assert found, texts[0][-2000:]
    step = int(found.group(1))
    assert f"SIGTERM: checkpointed step {step} in" in texts[1], texts[1][-2000:]
    assert_replicas_equal(workdir, texts[1], step)

    texts = run_multi_worker(workdir, tmp_path, "resumed", steps=step + 5)
    for text in texts:
        assert f"ckpt-{step} at step {step}" in text, text[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == step + 5 and summary["steps_this_run"] == 5
    assert_replicas_equal(workdir, texts[1], step + 5)


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_sigterm_to_a_starting_worker_stops_both_at_the_first_step(tmp_path):
    """SIGTERM to worker 1 while it starts (before its restore, a collective
    with the chief): held, not acted on there (dying would leave the chief
    waiting); both workers stop at the first step, checkpoint it and exit
    143."""
    workdir = tmp_path / "run"
    with reserved_ports(2) as ports:
        procs, logs = start_workers(
            [workdir] * 2,
            ports,
            tmp_path,
            "starting",
            1000,
            env_of_worker={1: {"VMA_TEST_SIGTERM_STARTING": "1"}},
        )
        codes = wait_all(procs, timeout=240)
    texts = [log.read_text() for log in logs]
    assert codes == [128 + signal.SIGTERM] * 2, "\n".join(t[-2000:] for t in texts)
    assert "SIGTERM to another worker: checkpointed step 1 in" in texts[0], texts[0]
    assert "SIGTERM: checkpointed step 1 in" in texts[1], texts[1][-2000:]
    assert_replicas_equal(workdir, texts[1], 1)


@pytest.mark.slow  # A TensorFlow process, as the other strategy tests.
def test_a_cluster_of_one_worker_trains(tmp_path):
    """`multi_worker` with one worker in $TF_CONFIG (a cluster being tried
    out): one replica, whose step outputs Keras passes through as they are
    (vectorising them for the cross-worker reduce gave `[1]` logs, and the
    first log interval failed on them)."""
    workdir = tmp_path / "run"
    with reserved_ports(1) as ports:
        procs, logs = start_workers([workdir], ports, tmp_path, "one", 20)
        codes = wait_all(procs, timeout=300)
    assert codes == [0], logs[0].read_text()[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 20 and sorted(train_rows(workdir)) == [10, 20]


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_patience_stops_every_worker_where_the_chief_s_history_says(tmp_path):
    """The patience rule reads the run's history in metrics.jsonl, which after
    a resume only the chief's holds (a worker logs into a new directory):
    every worker follows the chief's answer, or one would train on alone and
    wait in collectives for ever. The history the worker lacks is here one
    row written before the start, a valid bound at step 0 that no evaluation
    beats: the chief's rule (patience 20) is met at step 20 of 40, the
    worker's own log never meets it. Rerun without the summary (as after a
    kill in the final evaluation), the rule met before the start is the
    chief's alone again: both evaluate and end at step 20."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    row = {"split": "valid", "step": 0, "loss": 1.0, "nll_bound": 1.0}
    row.update(kl_a=0.0, kl_z=0.0, recon=1.0, steps_per_sec=1.0, wall_time=0.0)
    (workdir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    texts = run_multi_worker(
        workdir, tmp_path, "patience", steps=40, eval_every=10, patience=20
    )
    assert "Early stop: the valid bound has not improved since step 0" in texts[0]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 20 and summary["steps_this_run"] == 20
    assert_replicas_equal(workdir, texts[1], 20)

    (workdir / "summary.json").unlink()
    texts = run_multi_worker(
        workdir, tmp_path, "patience_again", steps=40, eval_every=10, patience=20
    )
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 20 and summary["steps_this_run"] == 0


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_mirrored_two_local_replicas_equal_two_workers(runs, tmp_path):
    """2 replicas in one process (MirroredStrategy on 2 logical CPUs) see the
    same per-replica batches and seeds as 2 workers: the same numbers; XLA
    falls back with a logged message. Every training and evaluation step
    seeds its two replicas' losses differently (and each step anew): the
    same noise on both would still match the workers, which share the
    code."""
    mirrored = tmp_path / "mirrored"
    log = tmp_path / "mirrored.log"
    proc = start(
        flag_args(mirrored, steps=20, strategy="mirrored", jit=True),
        log,
        env={"VMA_TEST_REPLICA_SEEDS": "1"},
        two_cpus=True,
    )
    assert wait_all([proc], timeout=300) == [0], log.read_text()[-3000:]
    text = log.read_text()
    assert "XLA off: --jit is not supported with 2 replicas" in text
    seeds = {}  # (kind, step) -> {replica: seed}
    for kind, step, replica, seed in re.findall(
        r"^replica seed (train|test) (\d+) (\d+) (\[-?\d+ -?\d+\])$", text, re.M
    ):
        seeds.setdefault((kind, int(step)), {})[int(replica)] = seed
    train = [k for k in seeds if k[0] == "train"]
    assert len(train) >= 20 and any(k[0] == "test" for k in seeds), sorted(seeds)
    for key, by_replica in seeds.items():
        assert len(set(by_replica.values())) == 2, (key, by_replica)
    steps = [seeds[k][0] for k in sorted(train)]
    assert len(set(steps)) == len(steps), steps
    a, b = train_rows(mirrored), train_rows(runs["multi"])
    assert sorted(a) == [10, 20]
    for step in a:
        np.testing.assert_allclose(
            a[step]["nll_bound"], b[step]["nll_bound"], rtol=1e-5, err_msg=str(step)
        )


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_skip_nonfinite_with_two_replicas(tmp_path):
    """--skip_nonfinite under MirroredStrategy (the skip is decided in
    cross-replica context): steps poisoned on replica 1 only are skipped on
    both and counted once, also in the row a signal writes mid-interval
    (SIGTERM in step 16, then a rerun); a row of steps all skipped has no
    bound; over steps 11-20, all poisoned, no weight or Adam moment moves
    (only the step counter, the seed stream and the save counter)."""
    workdir = tmp_path / "skip"
    log = tmp_path / "skip.log"
    # Both checkpoints follow an evaluation (same evaluation seed state).
    args = flag_args(
        workdir,
        steps=20,
        eval_every=10,
        checkpoint_every=10,
        strategy="mirrored",
        skip_nonfinite=True,
    )
    poisoned = ",".join(str(s) for s in (4, *range(11, 21)))
    env = {"VMA_TEST_NAN_STEPS": poisoned, "VMA_TEST_NAN_REPLICA": "1"}
    signalled = {**env, "VMA_TEST_SIGTERM_AT": "16"}
    proc = start(args, log, env=signalled, two_cpus=True)
    assert wait_all([proc], timeout=300) == [143], log.read_text()[-3000:]
    proc = start(args, log, env=env, two_cpus=True)
    assert wait_all([proc], timeout=300) == [0], log.read_text()[-3000:]
    rows = train_rows(workdir)
    assert [rows[s]["skipped_steps"] for s in (10, 16, 20)] == [1, 6, 4]
    assert np.isfinite(rows[10]["nll_bound"])
    assert not {"loss", "nll_bound", "kl_a", "kl_z", "recon"} & {*rows[16], *rows[20]}
    ckpt = workdir / "checkpoints"
    before = all_checkpoint_values(str(ckpt / "ckpt-10"))
    after = all_checkpoint_values(str(ckpt / "ckpt-20"))
    assert before.keys() == after.keys() and len(before) > 30
    moved = {n for n in before if not np.array_equal(before[n], after[n])}
    kinds = {
        "train_seed" if "train_seed" in n else n.split("/")[-3].split(".S")[-1]
        for n in moved
    }
    assert kinds == {"train_seed", "iteration", "save_counter"}, moved
    floats = [v for v in after.values() if np.asarray(v).dtype.kind == "f"]
    assert floats and all(np.all(np.isfinite(v)) for v in floats)


def test_replica_batches_split_x_and_replicate_memory():
    """Per-replica batches of R = 4 replicas, 2 per input pipeline: the x
    slices of all pipelines partition x in order; memory is never split."""
    x = tf.reshape(tf.range(8 * 3, dtype=tf.float32), [8, 3])
    memory = tf.reshape(tf.range(5 * 3, dtype=tf.float32), [5, 3])
    ds = tf.data.Dataset.from_tensors({"x": x, "memory": memory}).repeat(2)
    pieces = []
    for first in (0, 2):
        out = list(distribution.replica_batches(ds, replicas=4, first=first, local=2))
        assert len(out) == 4  # 2 global batches x 2 local replicas.
        for element in out:
            np.testing.assert_array_equal(element["memory"], memory)
            assert element["x"].shape == (2, 3)
        pieces.append([e["x"].numpy() for e in out[:2]])  # The first batch.
    np.testing.assert_array_equal(
        np.concatenate([p for piece in pieces for p in piece]), x
    )
    no_memory = tf.data.Dataset.from_tensors({"x": x})
    (a,) = list(distribution.replica_batches(no_memory, replicas=2, first=1, local=1))
    assert set(a) == {"x"}
    np.testing.assert_array_equal(a["x"], x[4:])
    strategy = tf.distribute.get_strategy()
    assert distribution.distribute(strategy, ds) is ds  # One replica: unchanged.


def test_batch_not_divisible_by_replicas_is_refused():
    config = configs.override(configs.get_preset("mnist_recall"), batch_size=9)
    with pytest.raises(
        configs.ConfigError, match="--batch_size=9 must be divisible by the 2"
    ):
        distribution.check_batch(config, 2)


def test_bad_strategy_flag_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.train",
            "--strategy=ps",
            f"--workdir={tmp_path / 'r'}",
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "strategy" in proc.stderr


def test_tf_config_is_checked_before_tensorflow_loads(tmp_path):
    """`preflight` refuses a malformed `$TF_CONFIG` for `multi_worker` (the
    launchers' bad-flag table has the messages) without importing
    TensorFlow; other strategies ignore it."""
    code = f"""
import os, sys
os.environ["TF_CONFIG"] = '{{"cluster": {{"worker": ["h:1"]}}}}'
from vma_tf import configs, workdir
base = configs.get_preset("mnist_recall")
workdir.preflight(base, {str(tmp_path / "a")!r}, check_data=False)
config = configs.override(base, strategy="multi_worker")
try:
    workdir.preflight(config, {str(tmp_path / "b")!r}, check_data=False)
except configs.ConfigError as e:
    print(e)
print("tensorflow" in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    message, imported = proc.stdout.splitlines()
    assert message.startswith('$TF_CONFIG must be {"cluster"'), message
    assert imported == "False"


@pytest.mark.slow
def test_workers_that_cannot_see_the_chiefs_checkpoint_refuse(runs, tmp_path):
    """Worker 1 pointed at another (empty) directory: it would start from step
    0 while the chief resumes at 40; both stop with one error line."""
    workdirs = (runs["multi"], tmp_path / "elsewhere")
    with reserved_ports(2) as ports:
        procs, logs = start_workers(workdirs, ports, tmp_path, "mismatch", 60)
        assert wait_all(procs, timeout=300) == [2, 2]
    for log in logs:
        assert "error: the workers resume from different checkpoints" in log.read_text()
    assert train_rows(runs["multi"]).keys() == {10, 20, 30, 40}


# A small MNIST VAE's config, 4 binary rows, and on two logical CPUs
# (`mirrored`) a global batch `x` of two copies of them, every replica seeded
# as one device is: the same step on either strategy moves the weights alike.
SAME_NOISE = r"""
import keras
from vma_tf import configs
from vma_tf.modeling.models import LatentVariableModel

def same_seed(seed):  # Both replicas draw the noise of one device.
    context = tf.distribute.get_replica_context()
    return seed, context.num_replicas_in_sync if context else 1
LatentVariableModel._replica_seed = staticmethod(same_seed)
config = configs.override(
    configs.get_preset("mnist_vae"), hidden_units=(16,), latent_dim=2, num_samples=3,
    jit=False,
)
rows = (np.random.default_rng(0).uniform(size=(4, 784)) > 0.5).astype(np.float32)
x = np.concatenate([rows, rows]) if mirrored else rows  # Each replica: rows.
strategy = (
    tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mirrored else tf.distribute.get_strategy()
)
"""


# One SGD step of a small MNIST VAE on `x`, under the default strategy or on
# two logical CPUs (MirroredStrategy), every replica seeded alike; prints the
# weights' change as JSON.
ONE_STEP = (
    r"""
import json, sys
import numpy as np
mirrored = two_cpus = sys.argv[1] == "mirrored"
"""
    + LOGICAL_CPUS
    + SAME_NOISE
    + r"""
from vma_tf.modeling.builders import build_model
from vma_tf.modeling.nonfinite import NonFiniteGuard
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = build_model(config.model, (784,), seed=0)
    model.compute_terms(rows, None, 3, seed=(0, 0))
    model.compile(
        optimizer=NonFiniteGuard(keras.optimizers.SGD(0.01), model.first_nonfinite_step),
        jit_compile=False,
    )
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    before = [v.numpy() for v in model.trainable_variables]
    model.fit(tf.data.Dataset.from_tensors({"x": x}), epochs=1, verbose=0)
    moved = [
        (v.numpy() - b).ravel().tolist()
        for v, b in zip(model.trainable_variables, before)
    ]
print(json.dumps(moved))
"""
)


@pytest.mark.slow  # Two TensorFlow processes, as the other strategy tests.
def test_two_replicas_step_as_one_device_on_the_global_mean(tmp_path):
    """Each replica's loss is divided by R and the optimizer sums the
    replicas' gradients: on a global batch of two copies of the same rows,
    with the same noise on both replicas, one SGD step moves every weight
    exactly as one device on those rows does (Adam, which training uses,
    would hide a wrong scale)."""

    def moved(strategy):
        proc = subprocess.run(
            [sys.executable, "-c", ONE_STEP, strategy],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [np.array(v) for v in json.loads(proc.stdout.splitlines()[-1])]

    one, two = moved("default"), moved("mirrored")
    assert len(one) == len(two) > 4
    assert sum(np.abs(v).sum() for v in one) > 0
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-9)


# Training's own model and Adam (`experiment.build_model`): under the default
# strategy, 2 steps on `rows`, a checkpoint (`checkpointing`), one more step;
# on two logical CPUs (MirroredStrategy), the checkpoint restored by
# training's `restore_newest_valid`, then the same step. Prints the step
# restored and the weights' change in that step as JSON.
RESUME_STEP = (
    r"""
import json, pathlib, sys
import numpy as np
mirrored = two_cpus = sys.argv[1] == "mirrored"
directory = pathlib.Path(sys.argv[2])
"""
    + LOGICAL_CPUS
    + SAME_NOISE
    + r"""
from vma_tf import checkpointing
from vma_tf.experiment import build_model
with strategy.scope():
    model = build_model(config, (784,), {"x": rows})
    checkpoint = checkpointing.make_checkpoint(model)
    if mirrored:
        checkpointing.restore_newest_valid(checkpoint, directory)
    else:
        model.fit(tf.data.Dataset.from_tensors({"x": x}).repeat(2), verbose=0)
        tf.train.CheckpointManager(checkpoint, directory, 1).save(2)
    step = int(model.optimizer.iterations.numpy())
    before = [v.numpy() for v in model.trainable_variables]
    model.fit(tf.data.Dataset.from_tensors({"x": x}), verbose=0)
    moved = [
        (v.numpy() - b).ravel().tolist()
        for v, b in zip(model.trainable_variables, before)
    ]
print(json.dumps({"step": step, "moved": moved}))
"""
)


@pytest.mark.slow  # Two TensorFlow processes, as the other strategy tests.
def test_default_strategy_checkpoint_resumes_under_mirrored(tmp_path):
    """A run checkpointed on one device and resumed on two replicas (a rerun
    with --strategy=mirrored): its weights, Adam moments, step counter and
    seed streams restore across the strategies, so the next step (same
    global-mean gradient, the same noise on both replicas) moves every
    weight as the one-device run's next step does. A lost Adam state or
    step counter would change the step's size; lost seed streams its noise."""

    def step(strategy):
        proc = subprocess.run(
            [sys.executable, "-c", RESUME_STEP, strategy, str(tmp_path / "ckpt")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.splitlines()[-1])
        return out["step"], [np.array(v) for v in out["moved"]]

    (saved, one), (resumed, two) = step("default"), step("mirrored")
    assert saved == resumed == 2
    assert len(one) == len(two) > 4
    assert sum(np.abs(v).sum() for v in one) > 0
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-9)
