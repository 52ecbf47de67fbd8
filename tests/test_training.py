"""End-to-end training: files, exact resume, NaN guard, locks, bad workdirs."""

import json
import os
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    all_checkpoint_values,
    checkpoint_values,
    read_metrics,
    run_launcher,
    tiny,
)

from vma_tf import checkpointing, configs, training
from vma_tf import time_to_quality as ttq
from vma_tf.configs import ModelConfig
from vma_tf.errors import CheckpointMismatchError, NonFiniteError, WorkdirError
from vma_tf.metrics_log import MetricsLog
from vma_tf.modeling.builders import build_mlp_model
from vma_tf.modeling.models import LatentVariableModel


_SLOW = pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.


@pytest.mark.parametrize(
    "preset",
    [
        pytest.param("mnist_recall", marks=_SLOW),
        pytest.param("mnist_learned", marks=_SLOW),
        pytest.param("mnist_vae", marks=_SLOW),
        "omniglot_fewshot",
        pytest.param("omniglot_learned", marks=_SLOW),
    ],
)
def test_run_writes_everything(tmp_path, preset):
    config = tiny(
        preset, **({"eval_memory_size": 32} if preset == "mnist_recall" else {})
    )
    summary = training.train_and_evaluate(config, tmp_path, progress=False)
    assert summary["step"] == 40
    for name in ("config.json", "metrics.jsonl", "samples.png", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tb").iterdir())
    saved = configs.Config.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert saved == config
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
    # The final evaluation reuses the periodic one at the last step where
    # both run the same dataset (the episodic presets): one row per split and
    # step. `omniglot_learned` evaluates 20 test batches periodically and the
    # whole test set at the end: two rows at step 40.
    seen = [(r["split"], r["step"]) for r in rows]
    repeats = 1 if preset == "omniglot_learned" else 0
    assert len(seen) - len(set(seen)) == repeats, seen
    last_test = [r for r in rows if r["split"] == "test" and r["step"] == 40][-1]
    assert summary["metrics"]["test"]["nll_bound"] == last_test["nll_bound"]
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


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
@pytest.mark.parametrize("preset", ["mnist_recall", "omniglot_fewshot"])
def test_resume_is_exact(tmp_path, preset):
    """20 steps + resume to 40 == 40 uninterrupted steps, bit for bit (MNIST:
    XLA; Omniglot: TF's oneDNN kernels, the conv presets' `jit=False`). Only
    the interrupted run evaluates at step 20 (its end), so this also checks
    that an evaluation leaves the training streams untouched."""
    assert configs.get_preset(preset).train.jit == (preset == "mnist_recall")
    full, part = tmp_path / "full", tmp_path / "part"
    config = tiny(preset, eval_every=40)
    training.train_and_evaluate(config, full, progress=False)
    training.train_and_evaluate(
        tiny(preset, steps=20, eval_every=40), part, progress=False
    )
    summary = training.train_and_evaluate(config, part, progress=False)
    assert summary["steps_this_run"] == 20
    a, b = checkpoint_values(full), checkpoint_values(part)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    train = lambda w: [
        (r["step"], r["loss"]) for r in read_metrics(w) if r["split"] == "train"
    ]
    assert train(full) == train(part)
    evals = lambda w: sorted(
        {r["step"] for r in read_metrics(w) if r["split"] != "train"}
    )
    assert evals(full) == [40] and evals(part) == [20, 40]


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_bfloat16_training_keeps_float32_state_and_resumes_in_float32(
    tmp_path, monkeypatch
):
    """`--precision=mixed_bfloat16`: the networks compute in bfloat16, every
    checkpointed value is float32, the loss is finite, and the run resumes
    under float32 (precision is resumable) with the global policy untouched."""
    built = []

    def build_model(*args, **kwargs):
        built.append(training.build_model.__wrapped__(*args, **kwargs))
        return built[-1]

    build_model.__wrapped__ = training.build_model
    monkeypatch.setattr(training, "build_model", build_model)
    bf16 = tiny("omniglot_fewshot", steps=20, precision="mixed_bfloat16")
    training.train_and_evaluate(bf16, tmp_path, progress=False)
    assert keras.config.dtype_policy().name == "float32"
    # From the checkpoint's own dtype map: numpy reads bfloat16 as kind "V".
    newest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    dtypes = tf.train.load_checkpoint(newest).get_variable_to_dtype_map()
    floats = {k: d for k, d in dtypes.items() if d.is_floating}
    assert len(floats) > 30 and set(floats.values()) == {tf.float32}, floats
    rows = [r for r in read_metrics(tmp_path) if r["split"] == "train"]
    assert rows and all(np.isfinite(r["loss"]) for r in rows)
    summary = training.train_and_evaluate(
        tiny("omniglot_fewshot", steps=40), tmp_path, progress=False
    )
    assert summary["steps_this_run"] == 20
    layers = lambda m: [l for l in m._flatten_layers() if l.weights]
    assert {l.compute_dtype for l in layers(built[0])} == {"bfloat16"}
    assert {l.compute_dtype for l in layers(built[1])} == {"float32"}


def test_rerun_after_completion_leaves_the_run_as_it_is(tmp_path, capsys):
    """Rerunning a finished run's command (a chain or `make reproduce` run
    again) trains and evaluates nothing: metrics.jsonl, summary.json and
    config.json keep their bytes (also with a resumable setting changed, or
    `--steps` below the run's step, refused), and the stored numbers are
    returned. With more `--steps` it trains on, and the final evaluation
    runs again."""
    config = tiny(steps=20, jit=False)
    first = training.train_and_evaluate(config, tmp_path, progress=False)
    names = ("metrics.jsonl", "summary.json", "config.json")
    files = {n: (tmp_path / n).read_bytes() for n in names}
    capsys.readouterr()
    changed = configs.override(config, skip_nonfinite=True)
    summary = training.train_and_evaluate(changed, tmp_path, progress=False)
    assert "The run ended at step 20 (summary.json)" in capsys.readouterr().out
    assert summary["steps_this_run"] == 0 and summary["step"] == 20
    assert summary["metrics"] == first["metrics"]
    assert {n: (tmp_path / n).read_bytes() for n in files} == files
    (tmp_path / "summary.json").unlink()
    with pytest.raises(configs.ConfigError, match="--steps=10 is below"):
        training.train_and_evaluate(tiny(steps=10, jit=False), tmp_path, progress=False)
    assert (tmp_path / "config.json").read_bytes() == files["config.json"]
    (tmp_path / "summary.json").write_bytes(files["summary.json"])
    longer = training.train_and_evaluate(
        tiny(steps=30, jit=False), tmp_path, progress=False
    )
    assert longer["step"] == 30 and longer["steps_this_run"] == 10
    rows = [
        json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if r["split"] == "test"][-1] == 30
    # A process killed in its final evaluation leaves an older summary.json:
    # the rerun evaluates again rather than return it.
    (tmp_path / "summary.json").write_bytes(files["summary.json"])
    again = training.train_and_evaluate(
        tiny(steps=30, jit=False), tmp_path, progress=False
    )
    assert again["step"] == 30 and again["metrics"]["test"] == longer["metrics"]["test"]
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 30


def test_stop_when_ends_training_at_that_evaluation(tmp_path):
    """`stop_when` (the time-to-quality launcher's early stop) is asked after
    each periodic evaluation; True at step 20 of 40 ends training there with
    a checkpoint (none is due at 20, so a rerun resumes there) and the final
    evaluation."""
    config = tiny(
        steps=40, eval_every=10, checkpoint_every=40, jit=False, eval_memory_size=32
    )
    asked = []

    def stop_when(records):
        asked.append([(r["split"], r["step"]) for r in records])
        return records[0]["step"] == 20

    summary = training.train_and_evaluate(
        config, tmp_path, progress=False, stop_when=stop_when
    )
    assert summary["step"] == 20
    assert asked == [
        [("valid", 10), ("valid_m32", 10)],
        [("valid", 20), ("valid_m32", 20)],
    ]
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("-20")
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20]
    assert {r["step"] for r in rows if r["split"] == "test"} == {20}


def test_patience_ends_training_once_the_bound_stops_improving(tmp_path):
    """`--patience`: with a learning rate too small to move any weight
    (w + 1e-30 == w in float32) every valid bound equals the first, so the
    rule (patience 10) stops at step 20 of 40; a rerun trains and evaluates
    no further."""
    config = tiny(
        steps=40,
        eval_every=10,
        checkpoint_every=40,
        jit=False,
        learning_rate=1e-30,
        patience=10,
    )
    summary = training.train_and_evaluate(config, tmp_path, progress=False)
    assert summary["step"] == 20
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("-20")
    rows = (tmp_path / "metrics.jsonl").read_bytes()
    again = training.train_and_evaluate(config, tmp_path, progress=False)
    assert again["step"] == 20 and again["steps_this_run"] == 0
    assert (tmp_path / "metrics.jsonl").read_bytes() == rows
    # Without the summary (a kill in the final evaluation) the rule, met
    # before the start, still holds: evaluated again, not trained on.
    (tmp_path / "summary.json").unlink()
    again = training.train_and_evaluate(config, tmp_path, progress=False)
    assert again["step"] == 20 and again["steps_this_run"] == 0


def test_a_bound_reached_before_the_restored_step_trains_no_further(tmp_path):
    """`stop_when` (`launchers.time_to_quality`'s bounds) met at the first
    evaluation (step 10 of 40) stops the run there; rerun without its summary (a kill in the final
    evaluation) it is evaluated again, not trained on, a rule on a split it
    does not evaluate is refused at its next evaluation, and a stricter bound
    trains on."""
    config = tiny(steps=40, eval_every=10, checkpoint_every=40, jit=False)
    reached = ttq.stop_when([1e9], "valid")
    summary = training.train_and_evaluate(
        config, tmp_path, progress=False, stop_when=reached
    )
    assert summary["step"] == 10
    (tmp_path / "summary.json").unlink()
    again = training.train_and_evaluate(
        config, tmp_path, progress=False, stop_when=reached
    )
    assert again["step"] == 10 and again["steps_this_run"] == 0
    # A rule on a split the run never evaluates is refused at the first
    # evaluation after the restored step, not at the resume check: there a
    # multi-worker run's chief would raise alone (the other workers' logs are
    # empty) and leave them waiting in the collective that follows.
    (tmp_path / "summary.json").unlink()
    with pytest.raises(configs.ConfigError, match="--split=valid_m32 is not evaluated"):
        training.train_and_evaluate(
            config,
            tmp_path,
            progress=False,
            stop_when=ttq.stop_when([1e9], "valid_m32"),
        )
    assert max(r["step"] for r in read_metrics(tmp_path)) == 20  # Trained on.
    stricter = ttq.stop_when([-1e9], "valid")
    again = training.train_and_evaluate(
        config, tmp_path, progress=False, stop_when=stricter
    )
    assert again["step"] == 40 and again["steps_this_run"] == 30
    # A log with train rows only (a checkpoint before the first evaluation)
    # has nothing a rule could read; of two rows of one (split, step) the
    # rule reads the periodic one, not the final evaluation's after it.
    assert not training._evaluated([{"split": "train", "step": 10}])
    rows = [{"split": "test", "step": 10, "nll_bound": b} for b in (90.0, 80.0)]
    assert training._periodic(rows) == rows[:1]


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_lr_drop_takes_effect_at_its_step_and_may_join_a_run_in_progress(tmp_path):
    """`--lr_drop_step`: with a learning rate too small to move any weight
    before it, the weights at the drop step are the first run's untouched
    ones and move after it; adding the drop to a run resumed at that step
    gives the uninterrupted run bit for bit; train rows log the rate."""
    flat = dict(eval_every=40, checkpoint_every=20, learning_rate=1e-30, jit=False)
    dropped = dict(lr_drop_step=20, lr_after_drop=3e-4)
    full, part = tmp_path / "full", tmp_path / "part"
    training.train_and_evaluate(tiny(**flat, **dropped), full, progress=False)
    training.train_and_evaluate(tiny(steps=20, **flat), part, progress=False)
    at_20 = checkpoint_values(part)
    training.train_and_evaluate(tiny(**flat, **dropped), part, progress=False)
    path_20 = str(full / "checkpoints" / "ckpt-20")
    for name, value in at_20.items():
        if "seed_generator" in name:  # `part` evaluated at 20, `full` did not.
            continue
        np.testing.assert_array_equal(
            tf.train.load_variable(path_20, name), value, err_msg=name
        )
    a, b = checkpoint_values(full), checkpoint_values(part)
    assert a.keys() == b.keys() == at_20.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert any(not np.array_equal(a[n], at_20[n]) for n in a)
    rates = [
        (r["step"], r["learning_rate"])
        for r in read_metrics(full)
        if r["split"] == "train"
    ]
    assert rates == [(10, 1e-30), (20, 1e-30), (30, 3e-4), (40, 3e-4)]


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


def nan_gradient_from(iteration):
    """`LatentVariableModel.objective` whose value is unchanged (finite) but
    whose gradient is NaN from optimizer step `iteration` (0-based) on."""
    original = LatentVariableModel.objective

    def poisoned(self, terms, *args, **kwargs):
        value = original(self, terms, *args, **kwargs)
        bad = self.optimizer.iterations >= iteration

        @tf.custom_gradient
        def identity(v):
            def grad(dy):
                return tf.where(bad, tf.fill(tf.shape(dy), float("nan")), dy)

            return tf.identity(v), grad

        return identity(value)

    return poisoned


def test_nonfinite_gradient_with_a_finite_loss_stops_training(tmp_path, monkeypatch):
    """The loss stays finite; only the gradient is NaN from step 26: training
    stops naming step 26 and keeps ckpt-20 (finite values)."""
    monkeypatch.setattr(LatentVariableModel, "objective", nan_gradient_from(25))
    with pytest.raises(NonFiniteError, match="step 26") as err:
        training.train_and_evaluate(tiny(jit=False), tmp_path, progress=False)
    assert "ckpt-20" in str(err.value)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-20")
    rows = [r for r in read_metrics(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [10, 20]
    assert all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_skip_nonfinite_changes_nothing_and_counts(tmp_path, monkeypatch):
    """--skip_nonfinite: every step after 20 is NaN; the run finishes, steps
    21-40 are counted, and no weight or Adam moment moved (only the step
    counter and the seed streams). A train row whose steps were all skipped
    has no bound (Keras' mean of no update reads 0.0)."""
    monkeypatch.setattr(LatentVariableModel, "objective", poison_from(20))
    summary = training.train_and_evaluate(
        tiny(skip_nonfinite=True), tmp_path, progress=False
    )
    assert summary["step"] == 40
    rows = {r["step"]: r for r in read_metrics(tmp_path) if r["split"] == "train"}
    assert [rows[s]["skipped_steps"] for s in (10, 20, 30, 40)] == [0, 0, 10, 10]
    assert all(np.isfinite(rows[s]["nll_bound"]) for s in (10, 20))
    assert not {"loss", "nll_bound", "kl_a", "kl_z", "recon"} & {*rows[30], *rows[40]}
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


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_a_run_older_than_the_evaluation_fields_keeps_them_when_resumed(tmp_path):
    """A workdir whose config.json predates `data.eval_subset` (a partial
    evaluation read the first batches): the same call trains with the value
    the run was made with, and config.json says so; and so does the next
    resume, which reads that rewritten config.json (it refused, 2026-12-07)."""
    config = tiny(steps=10, eval_every=10, checkpoint_every=10, jit=False)
    old = config.to_dict()
    del old["data"]["eval_subset"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    summary = training.train_and_evaluate(config, tmp_path, progress=False)
    assert summary["step"] == 10
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data"]["eval_subset"] == "first"
    config = tiny(steps=20, eval_every=10, checkpoint_every=10, jit=False)
    assert training.train_and_evaluate(config, tmp_path, progress=False)["step"] == 20
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data"]["eval_subset"] == "first"


def test_second_run_on_a_locked_workdir_refuses(tmp_path, monkeypatch):
    """A real first run holds the lock; at its step 20 a second process with
    the same command starts on the same workdir and is refused with one line;
    the first run then finishes as it would have, its files untouched."""
    config = tiny(jit=False)
    config_json = tmp_path / "flags.json"
    config_json.write_text(config.to_json())
    workdir = tmp_path / "run"
    second = {}
    on_epoch_end = training._Monitor.on_epoch_end

    def start_second_at_step_20(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if self._step() == 20:
            before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
            second["result"] = run_launcher(
                "train",
                [f"--config_json={config_json}", f"--workdir={workdir}"],
                env={"VMA_DATA_DIR": os.environ.get("VMA_DATA_DIR", "")},
            )
            after = sorted(p.name for p in (workdir / "checkpoints").iterdir())
            second["checkpoints"] = (before, after)

    monkeypatch.setattr(training._Monitor, "on_epoch_end", start_second_at_step_20)
    summary = training.train_and_evaluate(config, workdir, progress=False)
    result = second["result"]
    assert result.returncode != 0
    assert "in use by another run" in result.stderr + result.stdout
    before, after = second["checkpoints"]
    assert before == after  # The second wrote nothing.
    assert summary["step"] == 40 and summary["steps_this_run"] == 40
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30, 40]
    saved = configs.Config.from_dict(json.loads((workdir / "config.json").read_text()))
    assert saved == config
    values = all_checkpoint_values(str(workdir / "checkpoints" / "ckpt-40"))
    assert values["optimizer/000.Siteration/.ATTRIBUTES/VARIABLE_VALUE"] == 40


def test_resume_with_a_different_model_is_refused(tmp_path):
    """By config.json, before anything is read or written (the run's files
    stand in for a trained run: the check reads config.json alone)."""
    (tmp_path / "config.json").write_text(tiny(steps=20).to_json() + "\n")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-20.index").write_bytes(b"x")
    before = _tree(tmp_path)
    with pytest.raises(WorkdirError, match="memory_size"):
        training.train_and_evaluate(
            tiny(steps=40, memory_size=4), tmp_path, progress=False
        )
    assert _tree(tmp_path) == before


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_resume_drops_a_last_metrics_line_cut_short(tmp_path, capsys):
    """A write cut short (a full disk, a machine lost) leaves a last line that
    is not JSON: the resume drops it with a note and goes on. A bad line
    before the last is an error naming the file and line, the file kept."""
    training.train_and_evaluate(tiny(steps=20, jit=False), tmp_path, progress=False)
    metrics = tmp_path / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"split": "train", "st')
    capsys.readouterr()
    summary = training.train_and_evaluate(
        tiny(steps=30, jit=False), tmp_path, progress=False
    )
    assert summary["step"] == 30
    assert "its last line was cut short; dropped" in capsys.readouterr().err
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30]

    # Opened at step 20 (the rows past it dropped), it holds the rows kept.
    assert MetricsLog(tmp_path, 20).rows == [r for r in rows if r["step"] <= 20]
    lines = whole.splitlines()
    bad = "\n".join([lines[0], "", "not json", *lines[1:]]) + "\n"
    metrics.write_text(bad)  # The number counts the blank line too.
    with pytest.raises(WorkdirError, match="metrics.jsonl line 3 is not a metrics row"):
        MetricsLog(tmp_path, 20)
    assert metrics.read_text() == bad


def _event_steps(directory):
    """`{file name: [(tag, step)]}` of the scalar events of a `tb` directory."""
    from tensorflow.core.util import event_pb2

    out = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        events = [
            event_pb2.Event.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))
        ]
        out[path.name] = [(v.tag, e.step) for e in events for v in e.summary.value]
    return out


def test_resume_drops_tensorboard_events_past_the_checkpoint(tmp_path):
    """Events a killed process logged past the checkpoint (and a record cut
    short) are dropped when the run resumes, as metrics.jsonl's rows are:
    TensorBoard shows each step once. Files with nothing past it are kept
    byte for byte."""
    tb = tmp_path / "tb"
    for steps in ((5, 10), (15, 20, 25)):  # Two processes' files.
        writer = tf.summary.create_file_writer(str(tb))
        with writer.as_default():
            for step in steps:
                tf.summary.scalar("train/loss", float(step), step=step)
        writer.close()
        time.sleep(1.1)  # Another file name (its timestamp).
    first, second = sorted(tb.glob("events.out.tfevents.*"))
    kept = first.read_bytes()
    second.write_bytes(second.read_bytes() + b"\x10\x00\x00")  # Cut short.
    MetricsLog(tmp_path, 15)  # Opens its own (empty) file.
    steps = _event_steps(tb)
    assert steps.pop(first.name) == [("train/loss", 5), ("train/loss", 10)]
    assert steps.pop(second.name) == [("train/loss", 15)]
    assert list(steps.values()) == [[]]
    assert first.read_bytes() == kept
    assert not [p for p in tb.iterdir() if "tfevents" not in p.name]


def test_resume_with_an_edited_config_is_refused(tmp_path):
    """config.json edited to another model (NVIL's extra variables): the
    flags match it, so only the checkpoint can tell. The restore fails with
    one line naming the checkpoint; checkpoints and metrics are untouched."""
    training.train_and_evaluate(tiny(steps=20, jit=False), tmp_path, progress=False)
    edited = json.loads((tmp_path / "config.json").read_text())
    edited["model"]["estimator"] = "nvil"
    (tmp_path / "config.json").write_text(json.dumps(edited))
    checkpoints, metrics = _tree(tmp_path / "checkpoints"), _tree(tmp_path / "tb")
    rows = (tmp_path / "metrics.jsonl").read_text()
    config = tiny(steps=40, jit=False, estimator="nvil")
    with pytest.raises(CheckpointMismatchError, match="does not match this model") as e:
        training.train_and_evaluate(config, tmp_path, progress=False)
    assert "ckpt-20" in str(e.value) and "\n" not in str(e.value)
    assert _tree(tmp_path / "checkpoints") == checkpoints
    assert _tree(tmp_path / "tb") == metrics
    assert (tmp_path / "metrics.jsonl").read_text() == rows


def _compiled(estimator, decoder_context="all"):
    config = ModelConfig(
        kind="vma",
        memory="learned",
        memory_size=3,
        memory_dim=4,
        hidden_units=(5,),
        latent_dim=2,
        embed_dim=3,
        num_samples=2,
        estimator=estimator,
        decoder_context=decoder_context,
    )
    keras.utils.set_random_seed(0)
    model = build_mlp_model(config, (6,), seed=0)
    model.compute_terms(tf.zeros([2, 6]), None, 2, seed=(0, 0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize(
    "saved,restored",
    [
        ("nvil", "vimco"),  # Checkpoint variables the model lacks.
        ("vimco", "nvil"),  # Model variables the checkpoint lacks.
        ("vimco", "first"),  # Another decoder: names and shapes differ.
    ],
)
def test_checkpoint_of_another_model_restores_nothing(tmp_path, saved, restored):
    """`checkpointing.restore` of another model's checkpoint raises
    `CheckpointMismatchError` and leaves every model and optimizer variable
    at its value (nothing half-restored); the same model restores exactly."""
    source = _compiled(saved)
    for v in source.variables:  # Values no fresh model has.
        v.assign(v + tf.cast(1.5, v.dtype))
    path = checkpointing.make_checkpoint(source).save(str(tmp_path / "ckpt"))
    if restored == "first":
        target = _compiled("vimco", decoder_context="first")
    else:
        target = _compiled(restored)
    variables = [*target.variables, *target.optimizer.variables]
    before = [v.numpy().copy() for v in variables]
    with pytest.raises(CheckpointMismatchError, match="does not match this model"):
        checkpointing.restore(checkpointing.make_checkpoint(target), path)
    for v, value in zip(variables, before):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    same = _compiled(saved)
    checkpointing.restore(checkpointing.make_checkpoint(same), path)
    for a, b in zip(same.variables, source.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize(
    "content,message",
    [
        (tiny("mnist_vae").to_json(), "holds a 'mnist_vae' run, not 'mnist_recall'"),
        ('{"experiment": "someone else\'s"}', "is not a readable vma_tf config"),
        ("not json", "is not a readable vma_tf config"),
    ],
)
def test_foreign_workdir_is_refused_before_anything_is_written(
    tmp_path, content, message
):
    """A workdir holding another preset's run, or a config.json that is not
    ours: refused with one line; the directory is left exactly as it was."""
    (tmp_path / "config.json").write_text(content)
    (tmp_path / "notes.txt").write_text("theirs")
    before = _tree(tmp_path)
    with pytest.raises(WorkdirError, match=message) as err:
        training.train_and_evaluate(tiny(), tmp_path, progress=False)
    assert "\n" not in str(err.value)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("content", ["not json", '{"experiment": "theirs"}'])
def test_evaluating_a_workdir_with_a_foreign_config_is_one_line(tmp_path, content):
    """`load_run` (launchers.evaluate, export): a config.json that is not ours
    is one line naming the file, not a traceback."""
    from vma_tf import experiment

    (tmp_path / "config.json").write_text(content)
    with pytest.raises(WorkdirError, match="config.json is not a readable vma_tf") as e:
        experiment.load_run(tmp_path)
    assert "\n" not in str(e.value)


def test_unwritable_workdir_writes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkdirError, match="not writable"):
        training.train_and_evaluate(tiny(), blocker / "run", progress=False)


@pytest.fixture(scope="module")
def warm_start_source(tmp_path_factory):
    """A 20-step run the warm-start tests start from (read, never written)."""
    source = tmp_path_factory.mktemp("warm") / "small"
    training.train_and_evaluate(tiny(steps=20, jit=False), source, progress=False)
    return source


def test_warm_start_copies_the_model_and_starts_a_fresh_optimizer(
    tmp_path, monkeypatch, warm_start_source
):
    """Right after the warm start every model weight equals the source's
    checkpoint exactly (the target's own seed initialises them otherwise),
    the run's own state (seed streams, first non-finite step) is the new
    run's, not the source's, and the optimizer starts at step 0."""
    source, target = warm_start_source, tmp_path / "big"
    trained = checkpoint_values(source)
    loaded, real_warm_start = {}, checkpointing.warm_start

    def warm_start(model, run_dir):
        path = real_warm_start(model, run_dir)
        own = {id(v) for v in model.run_state()}
        loaded["values"] = [v.numpy() for v in model.variables]
        loaded["own"] = [id(v) in own for v in model.variables]
        loaded["run_state"] = [v.numpy().tolist() for v in model.run_state()]
        loaded["iterations"] = int(model.optimizer.iterations.numpy())
        return path

    monkeypatch.setattr(checkpointing, "warm_start", warm_start)
    # A memory-size curriculum: the same networks, a bigger episodic memory.
    config = tiny(
        steps=10,
        log_every=10,
        eval_every=10,
        checkpoint_every=10,
        memory_size=16,
        init_from=str(source),
        jit=False,
        seed=1,
    )
    summary = training.train_and_evaluate(config, target, progress=False)
    assert summary["step"] == 10  # The optimizer starts at step 0.
    assert loaded["iterations"] == 0
    # Checkpoint keys are `model/NNN...` by variable index: sorted, in order.
    assert len(loaded["values"]) == len(trained)
    assert sum(loaded["own"]) == 3
    for key, value, own in zip(sorted(trained), loaded["values"], loaded["own"]):
        if not own:
            np.testing.assert_array_equal(value, trained[key], err_msg=key)
    # Seed 1's streams from their start (the source's train stream has moved
    # on 20 steps), no non-finite step.
    assert loaded["run_state"] == [[1, 0], [2, 0], -1]
    # After 10 steps from the warm start the weights moved, but far less than
    # from a fresh initialisation: compare against the source's weights.
    after = checkpoint_values(target)
    kernels = [n for n in trained if "kernel" in n]
    assert kernels and set(kernels) <= set(after)
    for n in kernels:
        diff = np.abs(after[n] - trained[n]).max()
        assert 0 < diff < 0.05, (n, diff)


def test_warm_start_from_another_architecture_is_refused(tmp_path, warm_start_source):
    from vma_tf.errors import CheckpointMismatchError

    config = tiny(
        steps=10,
        log_every=10,
        eval_every=10,
        checkpoint_every=10,
        decoder_context="first",
        init_from=str(warm_start_source),
    )
    with pytest.raises(CheckpointMismatchError, match="--init_from="):
        training.train_and_evaluate(config, tmp_path / "other", progress=False)
    # Nothing was trained into the new run.
    assert not (tmp_path / "other" / "checkpoints").exists() or not list(
        (tmp_path / "other" / "checkpoints").glob("ckpt-*")
    )


@pytest.mark.parametrize(
    "damage",
    [
        # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
        pytest.param("truncate_data", marks=pytest.mark.slow),
        pytest.param("garbage_index", marks=pytest.mark.slow),
    ],
)
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


@pytest.mark.slow  # A signal path, as the others (BUILD.md "Tests").
def test_a_stop_at_an_unreadable_checkpoints_step_saves_that_step(
    tmp_path, monkeypatch
):
    """Resumed from ckpt-20 past an unreadable ckpt-25 (a signal's step), a
    stop at step 25 saves it again: the manager's state file still names the
    bad one, which the stop took for this step's save (the run then fell
    back to 20 on every rerun)."""
    from vma_tf.errors import Interrupted

    def stop_at_25(monitor):
        monitor.signal, monitor.from_peer = signal.SIGTERM, False
        return monitor._step() == 25

    monkeypatch.setattr(training._Monitor, "_signalled", stop_at_25)
    config, workdir = tiny(steps=40, jit=False), tmp_path / "run"
    with pytest.raises(Interrupted, match="checkpointed step 25"):
        training.train_and_evaluate(config, workdir, progress=False)
    (workdir / "checkpoints" / "ckpt-25.index").write_bytes(b"not a checkpoint")
    with pytest.raises(Interrupted, match="checkpointed step 25"):
        training.train_and_evaluate(config, workdir, progress=False)  # From 20.
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints" / "ckpt-25"))
    assert reader.get_variable_to_shape_map()  # Readable again.


@pytest.mark.parametrize(
    "damage",
    [
        # >= 30 s in clean-clone default runs (47.9 s at c9779fa, 54.2 s at
        # 5a7716e; BUILD.md "Tests"): `make test-slow`, run by CI.
        pytest.param("state_deleted", marks=pytest.mark.slow),
        pytest.param("state_empty", marks=pytest.mark.slow),
        "newest_gone",
    ],
)
def test_resume_and_load_read_the_checkpoints_not_their_state_file(
    tmp_path, capsys, damage
):
    """TF's `checkpoints/checkpoint` state file lost, emptied, or naming a
    checkpoint that is gone: a resumed run continues from the newest
    checkpoint there is (not from step 0, its log kept), the manager keeps
    deleting old ones, and `load_run` restores it; an unreadable newest one
    is skipped by `load_run` as by training."""
    from vma_tf.experiment import load_run

    config = tiny(steps=40, jit=False, keep_checkpoints=2)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)  # ckpt-20, ckpt-40
    directory = workdir / "checkpoints"
    if damage == "state_deleted":
        (directory / "checkpoint").unlink()
    elif damage == "state_empty":
        (directory / "checkpoint").write_text("")
    else:
        for f in directory.glob("ckpt-40.*"):
            f.unlink()
    start = 20 if damage == "newest_gone" else 40
    assert load_run(workdir)[3] == start
    summary = training.train_and_evaluate(
        configs.override(config, steps=80), workdir, progress=False
    )
    assert summary["step"] == 80 and summary["steps_this_run"] == 80 - start
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(10, 81, 10))
    assert sorted(p.name for p in directory.glob("*.index")) == [
        "ckpt-60.index",
        "ckpt-80.index",
    ]
    data = next(directory.glob("ckpt-80.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    capsys.readouterr()
    assert load_run(workdir)[3] == 60
    assert "ckpt-80 is unreadable" in capsys.readouterr().err


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    config = tiny(steps=20, jit=False)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)
    for index in (workdir / "checkpoints").glob("*.index"):
        index.write_bytes(b"garbage")
    with pytest.raises(configs.ConfigError, match="no readable checkpoint"):
        training.train_and_evaluate(config, workdir, progress=False)


class _FixedEvaluation:
    """A stand-in model whose every evaluation returns `values` (no addresses)."""

    has_addresses = False

    def __init__(self, **values):
        self.values = values
        self.distribute_strategy = tf.distribute.get_strategy()

    def reset_eval_seed(self):
        pass

    def evaluate(self, data, steps=None, verbose=0, return_dict=True):
        return dict(self.values)


@pytest.mark.parametrize(
    ("kl_z", "warn", "warned"),
    [(0.006, True, True), (0.006, False, False), (0.2, True, False)],
)
def test_unused_z_prints_one_warning_line(capsys, kl_z, warn, warned):
    """An evaluation whose KL of z is below `UNUSED_Z_MAX_KL` names its step
    and split in one line (a collapsed run on the GMN split gave 0.006 nats
    at step 1000, a healthy one 3.8), only where asked."""
    model = _FixedEvaluation(nll_bound=140.0, kl_z=kl_z)
    data = {"test": tf.data.Dataset.range(2)}
    records = training.evaluate(model, data, 1000, warn_unused_z=warn)
    assert records == [
        {"split": "test", "step": 1000, "nll_bound": 140.0, "kl_z": kl_z}
    ]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "WARNING" in ln]
    if warned:
        assert lines == [training.unused_z_warning("test", 1000, kl_z)]
        assert "step 1000 (test)" in lines[0] and "0.006" in lines[0]
    else:
        assert lines == []


def test_unused_z_is_not_a_warning_in_recall():
    """In recall the targets are memory entries: z unused is the optimum."""
    assert not training._warn_unused_z(configs.get_preset("mnist_recall"))
    for preset in ("mnist_learned", "mnist_vae", "omniglot_fewshot", "omniglot_gmn"):
        assert training._warn_unused_z(configs.get_preset(preset))


def test_log_intervals():
    assert training.log_intervals(50, 275, 100) == [(50, 1), (100, 1), (75, 1)]
    assert training.log_intervals(0, 300, 100) == [(100, 3)]
    assert training.log_intervals(40, 40, 10) == []
    assert training.log_intervals(50, 30, 10) == []  # Keras would never stop.


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_resume_with_steps_below_the_checkpoint_is_one_line(tmp_path):
    """A run whose newest checkpoint is past --steps (and did not end there)
    is refused; Keras would otherwise train on without end."""
    config = tiny(steps=40, jit=False)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)
    (workdir / "summary.json").unlink()  # As after a stop in its final evaluation.
    with pytest.raises(
        configs.ConfigError, match=r"--steps=20 is below the run's step 40"
    ):
        training.train_and_evaluate(
            configs.override(config, steps=20), workdir, progress=False
        )


def test_finished_run_ignores_rows_past_its_checkpoint(tmp_path):
    """The patience rule of a rerun reads the rows up to the restored step:
    rows a stopped extension wrote past its last checkpoint (which the
    resumed run drops) do not end the run."""
    config = tiny(steps=40, jit=False)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)
    rows = read_metrics(workdir)
    best = min(r["nll_bound"] for r in rows if r["split"] == "valid")
    with open(workdir / "metrics.jsonl", "a") as f:  # An extension's orphans.
        for step in (60, 80):
            row = {"split": "valid", "step": step, "nll_bound": best + 50.0}
            f.write(json.dumps(row) + "\n")
    longer = configs.override(config, steps=80, patience=40)
    assert training._finished_summary(workdir, 40, longer.train) is None
    # Read with its orphans, the rule would be met (best at or before 40, 80 - 40 >= 40).
    assert training._plateaued_at(workdir / "metrics.jsonl", 80, 40)


def test_a_rerun_ending_at_a_checkpoint_between_evaluations_evaluates_it(tmp_path):
    """`--steps` set to the newest checkpoint, which a kill left between two
    evaluations (ckpt-30, evaluations every 20): nothing to train, and the
    run's last step gets the periodic evaluation every run's last step has,
    so the summary holds `valid` as an uninterrupted 30-step run's does."""
    config = tiny(steps=40, checkpoint_every=10, jit=False)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, workdir, progress=False)
    for path in (workdir / "checkpoints").glob("ckpt-40.*"):
        path.unlink()
    (workdir / "summary.json").unlink()
    shorter = configs.override(config, steps=30)
    again = training.train_and_evaluate(shorter, workdir, progress=False)
    assert again["steps_this_run"] == 0 and again["step"] == 30
    straight = training.train_and_evaluate(
        shorter, tmp_path / "straight", progress=False
    )
    assert sorted(again["metrics"]) == sorted(straight["metrics"])
    assert sorted(again["metrics"]) == ["test", "train", "valid"]
    assert again["metrics"]["valid"] == pytest.approx(straight["metrics"]["valid"])
    rows = [r["split"] for r in read_metrics(workdir) if r["step"] == 30]
    assert sorted(rows) == ["test", "train", "valid"]


def test_a_rerun_with_nothing_to_train_summarises_as_the_run_did(tmp_path):
    """Killed in its final evaluation (no summary.json), a finished run's
    rerun writes the summary an uninterrupted run wrote: the train and
    periodic rows of its last step too, not the final splits alone. It takes
    the final rows already written (marked `final`) and evaluates only the
    splits the kill left out: every final split has one row at the step."""
    config = tiny(steps=40, jit=False, eval_memory_size=32)  # Finals: test, test_m32.
    workdir = tmp_path / "run"
    first = training.train_and_evaluate(config, workdir, progress=False)
    metrics = workdir / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    finals = [json.loads(line)["split"] for line in lines if '"final": true' in line]
    assert finals == ["test", "test_m32"]
    (workdir / "summary.json").unlink()
    metrics.write_text("".join(lines[:-1]))  # Killed in test_m32's evaluation.
    again = training.train_and_evaluate(config, workdir, progress=False)
    assert again["steps_this_run"] == 0
    assert metrics.read_text().splitlines(keepends=True)[:-1] == lines[:-1]
    at_40 = [
        (r["split"], r.get("final")) for r in read_metrics(workdir) if r["step"] == 40
    ]
    assert sorted(at_40, key=str) == sorted(
        [("train", None), ("valid", None), ("valid_m32", None)]
        + [("test", True), ("test_m32", True)],
        key=str,
    )
    assert sorted(again["metrics"]) == sorted(first["metrics"])
    assert sorted(first["metrics"]) == [
        "test",
        "test_m32",
        "train",
        "valid",
        "valid_m32",
    ]
    for split in first["metrics"]:
        assert again["metrics"][split] == pytest.approx(first["metrics"][split])
