"""End-to-end training: files, exact resume, NaN guard, locks, bad workdirs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vma_tf import configs, training
from vma_tf.errors import NonFiniteError, WorkdirError
from vma_tf.modeling.models import LatentVariableModel


def tiny(preset="mnist_recall", **overrides):
    base = dict(
        steps=40, log_every=10, eval_every=20, checkpoint_every=20, eval_batches=2
    )
    if preset.startswith("omniglot"):
        base["channels"] = 4
    if configs.get_preset(preset).data.task == "episodes":
        base.update(batch_classes=2, targets_per_class=2, memory_per_class=2)
    else:
        base.update(memory_size=8, batch_size=8)
    if preset == "mnist_recall":
        base["eval_memory_size"] = 32
    base.update(overrides)
    return configs.override(configs.get_preset(preset), **base)


def checkpoint_values(workdir):
    path = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    return {
        n: tf.train.load_variable(path, n)
        for n, _ in tf.train.list_variables(path)
        if n.startswith("model/")
    }


def read_metrics(workdir):
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "preset",
    [
        "mnist_recall",
        "mnist_learned",
        "mnist_vae",
        "omniglot_fewshot",
        "omniglot_learned",
    ],
)
def test_run_writes_everything(tmp_path, preset):
    summary = training.train_and_evaluate(tiny(preset), tmp_path, progress=False)
    assert summary["step"] == 40
    for name in ("config.json", "metrics.jsonl", "samples.png", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tb").iterdir())
    saved = configs.Config.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert saved == tiny(preset)
    rows = read_metrics(tmp_path)
    keys = {
        "split",
        "step",
        "loss",
        "nll_bound",
        "kl_a",
        "kl_z",
        "recon",
        "steps_per_sec",
    }
    assert all(keys <= set(r) for r in rows)
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30, 40]
    splits = {r["split"] for r in rows}
    assert {"train", "test"} <= splits
    if preset.startswith("mnist"):
        assert "valid" in splits
    if preset == "mnist_recall":
        assert {"valid_m32", "test_m32"} <= splits
    # Every model variable is in the checkpoint (weights, seeds, memory).
    values = checkpoint_values(tmp_path)
    n_model_vars = len([k for k in values if "/.ATTRIBUTES/" in k])
    assert n_model_vars >= (15 if preset == "mnist_vae" else 30)
    if preset.endswith("learned"):
        assert any("memory.Smemory" in k for k in values)  # "/" is escaped ".S"


@pytest.mark.parametrize("preset", ["mnist_recall", "omniglot_fewshot"])
def test_resume_is_exact(tmp_path, preset):
    """20 steps + resume to 40 == 40 uninterrupted steps, bit for bit (MNIST:
    XLA; Omniglot: TF's oneDNN kernels, the conv presets' `jit=False`)."""
    assert configs.get_preset(preset).train.jit == (preset == "mnist_recall")
    full, part = tmp_path / "full", tmp_path / "part"
    training.train_and_evaluate(tiny(preset), full, progress=False)
    training.train_and_evaluate(tiny(preset, steps=20), part, progress=False)
    summary = training.train_and_evaluate(tiny(preset), part, progress=False)
    assert summary["steps_this_run"] == 20
    a, b = checkpoint_values(full), checkpoint_values(part)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    train = lambda w: [
        (r["step"], r["loss"]) for r in read_metrics(w) if r["split"] == "train"
    ]
    assert train(full) == train(part)


def test_rerun_after_completion_only_evaluates(tmp_path):
    training.train_and_evaluate(tiny(steps=20), tmp_path, progress=False)
    summary = training.train_and_evaluate(tiny(steps=20), tmp_path, progress=False)
    assert summary["steps_this_run"] == 0 and summary["step"] == 20


def poison_from(iteration):
    """`LatentVariableModel.objective` that is NaN from optimizer step
    `iteration` (0-based) on. (`tf.where`, not `+ 0 * nan`: 0 * NaN is NaN.)"""
    original = LatentVariableModel.objective

    def poisoned(self, terms, *args, **kwargs):
        value = original(self, terms, *args, **kwargs)
        bad = self.optimizer.iterations >= iteration
        return tf.where(bad, tf.constant(float("nan"), value.dtype), value)

    return poisoned


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(LatentVariableModel, "objective", poison_from(25))
    with pytest.raises(NonFiniteError, match="step 26") as err:
        training.train_and_evaluate(tiny(), tmp_path, progress=False)
    assert "ckpt-20" in str(err.value) and "\n" not in str(err.value)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-20")
    assert np.all(
        [
            np.all(np.isfinite(v))
            for v in checkpoint_values(tmp_path).values()
            if v.dtype.kind == "f"
        ]
    )


def all_checkpoint_values(path):
    return {
        n: tf.train.load_variable(path, n) for n, _ in tf.train.list_variables(path)
    }


def test_skip_nonfinite_changes_nothing_and_counts(tmp_path, monkeypatch):
    """--skip_nonfinite: every step after 20 is NaN; the run finishes, steps
    21-40 are counted, and no weight or Adam moment moved (only the step
    counter and the seed streams)."""
    monkeypatch.setattr(LatentVariableModel, "objective", poison_from(20))
    summary = training.train_and_evaluate(
        tiny(skip_nonfinite=True), tmp_path, progress=False
    )
    assert summary["step"] == 40
    rows = {r["step"]: r for r in read_metrics(tmp_path) if r["split"] == "train"}
    assert [rows[s]["skipped_steps"] for s in (10, 20, 30, 40)] == [0, 0, 10, 10]
    ckpt = tmp_path / "checkpoints"
    before = all_checkpoint_values(str(ckpt / "ckpt-20"))
    after = all_checkpoint_values(str(ckpt / "ckpt-40"))
    assert before.keys() == after.keys()
    moved = {n for n in before if not np.array_equal(before[n], after[n])}
    kinds = {
        "train_seed" if "train_seed" in n else n.split("/")[-3].split(".S")[-1]
        for n in moved
    }
    assert kinds == {"train_seed", "iteration", "save_counter"}, moved
    assert after[next(n for n in moved if n.startswith("optimizer/"))] == 40


def test_second_run_on_a_locked_workdir_refuses(tmp_path):
    import fcntl

    tmp_path.mkdir(exist_ok=True)
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(WorkdirError, match="in use"):
            training.train_and_evaluate(tiny(), tmp_path, progress=False)
    finally:
        os.close(fd)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_resume_with_a_different_model_is_refused(tmp_path):
    training.train_and_evaluate(tiny(steps=20), tmp_path, progress=False)
    with pytest.raises(WorkdirError, match="memory_size"):
        training.train_and_evaluate(
            tiny(steps=40, memory_size=4), tmp_path, progress=False
        )


def test_unwritable_workdir_writes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkdirError, match="not writable"):
        training.train_and_evaluate(tiny(), blocker / "run", progress=False)


def test_warm_start_copies_the_model_and_starts_a_fresh_optimizer(tmp_path):
    source, target = tmp_path / "small", tmp_path / "big"
    training.train_and_evaluate(tiny(steps=20), source, progress=False)
    trained = checkpoint_values(source)
    # A memory-size curriculum: the same networks, a bigger episodic memory.
    config = tiny(
        steps=10,
        log_every=10,
        eval_every=10,
        checkpoint_every=10,
        memory_size=16,
        init_from=str(source),
    )
    summary = training.train_and_evaluate(config, target, progress=False)
    assert summary["step"] == 10  # The optimizer starts at step 0.
    # After 10 steps from the warm start the weights moved, but far less than
    # from a fresh initialisation: compare against the source's weights.
    after = checkpoint_values(target)
    kernels = [n for n in trained if "kernel" in n]
    assert kernels and set(kernels) <= set(after)
    for n in kernels:
        diff = np.abs(after[n] - trained[n]).max()
        assert 0 < diff < 0.05, (n, diff)


def test_warm_start_from_another_architecture_is_refused(tmp_path):
    from vma_tf.errors import CheckpointMismatchError

    training.train_and_evaluate(tiny(steps=20), tmp_path / "mlp", progress=False)
    config = tiny(
        steps=10,
        log_every=10,
        eval_every=10,
        checkpoint_every=10,
        decoder_context="first",
        init_from=str(tmp_path / "mlp"),
    )
    with pytest.raises(CheckpointMismatchError, match="--init_from="):
        training.train_and_evaluate(config, tmp_path / "other", progress=False)
    # Nothing was trained into the new run.
    assert not (tmp_path / "other" / "checkpoints").exists() or not list(
        (tmp_path / "other" / "checkpoints").glob("ckpt-*")
    )


@pytest.mark.parametrize("damage", ["truncate_data", "garbage_index"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, capsys, damage
):
    """A damaged newest checkpoint is skipped with a warning naming it; the run
    resumes from the next older one and ends as an undamaged run would."""
    config = tiny(steps=40, jit=False)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)  # ckpt-20, ckpt-40
    newest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert newest.endswith("-40")
    if damage == "truncate_data":
        data = next((workdir / "checkpoints").glob("ckpt-40.data-*"))
        data.write_bytes(data.read_bytes()[:100])
    else:
        (workdir / "checkpoints" / "ckpt-40.index").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    summary = training.train_and_evaluate(config, workdir, progress=False)
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is unreadable" in err
    assert summary["step"] == 40 and summary["steps_this_run"] == 20
    reference = tmp_path / "reference"
    training.train_and_evaluate(config, reference, progress=False)
    ours, ref = checkpoint_values(workdir), checkpoint_values(reference)
    assert ours.keys() == ref.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    config = tiny(steps=20, jit=False)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)
    for index in (workdir / "checkpoints").glob("*.index"):
        index.write_bytes(b"garbage")
    with pytest.raises(configs.ConfigError, match="no readable checkpoint"):
        training.train_and_evaluate(config, workdir, progress=False)
