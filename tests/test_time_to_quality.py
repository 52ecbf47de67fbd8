"""Time to quality (`vma_tf.time_to_quality`, `launchers.time_to_quality`):
first reaching evaluation, training time across resumed runs, the launcher's
report. No TensorFlow: synthetic metrics rows and fake run directories."""

import json

import pytest
from helpers import run_launcher

from vma_tf import configs
from vma_tf import time_to_quality as ttq


def train(step, steps_per_sec):
    """A train row closing an interval run at `steps_per_sec`."""
    return {
        "split": "train",
        "step": step,
        "nll_bound": 0.0,
        "steps_per_sec": float(steps_per_sec),
    }


def evaluation(step, bound, split="test"):
    """An evaluation row (its steps_per_sec is eval batches/s: not training)."""
    return {"split": split, "step": step, "nll_bound": bound, "steps_per_sec": 9.0}


def resumed_run():
    """Omniglot-like: log every 100, evaluate every 200. Process 1 runs to
    step 400, is interrupted at 450 (partial row) and resumes there; process
    2 runs to 600, its final evaluation repeats the step-600 test row. Every
    interval takes 10 s except the partial one (5 s) and the first of
    process 2 (50 steps in 20 s: graph tracing)."""
    return [
        train(100, 10),
        train(200, 10),
        evaluation(200, 120.0),
        train(300, 10),
        train(400, 10),
        evaluation(400, 99.5),
        train(450, 10),  # SIGTERM: partial interval, then ckpt-450.
        train(500, 2.5),  # Process 2 resumes at 450: 50 steps in 20 s.
        train(600, 10),
        evaluation(600, 95.0),
        evaluation(600, 95.0),  # The final evaluation of the last step.
    ]


def test_first_reaching_evaluation_and_training_time_of_a_resumed_run():
    report = ttq.time_to_quality(resumed_run(), [100, 96, 90])
    r100, r96, r90 = report.reaches
    assert (r100.reached, r100.step, r100.nll_bound) == (True, 400, 99.5)
    assert r100.train_seconds == pytest.approx(40.0)  # 4 intervals, no eval time.
    assert (r96.reached, r96.step, r96.train_seconds) == (True, 600, pytest.approx(75))
    # Never reached: the best so far, with its step and time.
    assert (r90.reached, r90.step, r90.nll_bound) == (False, 600, 95.0)
    assert report.evaluations == 3 and report.last_step == 600
    assert report.train_seconds == pytest.approx(75.0)
    assert not report.all_reached
    assert ttq.time_to_quality(resumed_run(), [130, 120]).all_reached


def test_a_rewound_log_keeps_the_later_history():
    """Rows past a resume point that were not dropped (a log concatenated or
    written without MetricsLog's truncation): the later rows win."""
    rows = [
        train(100, 10),
        train(200, 10),
        evaluation(200, 99.0),  # Of the abandoned history: dropped.
        train(200, 5),  # Again from step 100: 100 steps in 20 s.
        evaluation(200, 101.0),
        train(300, 10),
        train(400, 10),
        evaluation(400, 98.0),
    ]
    reach = ttq.time_to_quality(rows, [100]).reaches[0]
    assert (reach.step, reach.nll_bound) == (400, 98.0)
    assert reach.train_seconds == pytest.approx(10 + 20 + 10 + 10)


def test_split_choice_and_bad_rows():
    rows = [train(100, 10), evaluation(100, 90.0, split="valid"), evaluation(100, 80.0)]
    assert ttq.time_to_quality(rows, [95], split="valid").reaches[0].nll_bound == 90
    with pytest.raises(ValueError, match=r"no 'valid_m2048' evaluation.*test, valid"):
        ttq.time_to_quality(rows, [95], split="valid_m2048")
    with pytest.raises(ValueError, match="steps_per_sec=0.0; need a positive"):
        ttq.time_to_quality([train(100, 0), evaluation(100, 1.0)], [95])
    with pytest.raises(ValueError, match="no split and step"):
        ttq.time_to_quality([{"loss": 1.0}], [95])
    assert ttq.check_thresholds(["100", 90]) == (100.0, 90.0)
    for bad in ([], ["x"], ["inf"]):
        with pytest.raises(ValueError, match="must"):
            ttq.check_thresholds(bad)
    assert ttq.reached_all([evaluation(10, 90.0)], [100, 90], "test")
    assert not ttq.reached_all(
        [evaluation(10, 90.5), evaluation(10, 1.0, "valid")], [90], "test"
    )


def fake_run(path, rows, config=None):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config is not None:
        (path / "config.json").write_text(config.to_json() + "\n")
    return path


def test_launcher_reports_on_an_existing_run(tmp_path):
    run = fake_run(tmp_path / "run", resumed_run())
    proc = run_launcher(
        "time_to_quality", ["--notrain", "--quality=100,90", f"--workdir={run}"]
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert (
        "3 evaluations, trained to step 600 in 1m15s of training steps (75 s)"
        in lines[0]
    )
    assert lines[2].split() == ["<=", "100", "yes", "400", "99.500", "40", "40.0s"]
    assert lines[3].split()[:6] == ["<=", "90", "no", "600", "95.000", "75"]
    assert "not reached" in lines[3]
    # A line cut short at the end (a full disk, a machine lost) is left out;
    # a line that is not JSON before it is one line naming flag and line.
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + '{"split": "test", "st')
    again = run_launcher(
        "time_to_quality", ["--notrain", "--quality=100,90", f"--workdir={run}"]
    )
    assert again.returncode == 0 and again.stdout == proc.stdout, again.stderr
    (run / "metrics.jsonl").write_text("{bad\n" + text)
    proc = run_launcher(
        "time_to_quality", ["--notrain", "--quality=100", f"--workdir={run}"]
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: --workdir={run}") and "line 1" in proc.stderr


def test_launcher_reads_the_runs_periodic_split_by_default(tmp_path):
    """On an MNIST run (periodic `valid`, plus the final evaluation's `test`
    row at the last step) --notrain reads `valid` unless --split says."""
    rows = [
        train(100, 10),
        evaluation(100, 99.0, split="valid"),
        train(200, 10),
        evaluation(200, 97.0, split="valid"),
        evaluation(200, 96.0),  # The final test evaluation.
    ]
    run = fake_run(tmp_path / "run", rows)
    args = ["--notrain", "--quality=98", f"--workdir={run}"]
    proc = run_launcher("time_to_quality", args)
    assert proc.returncode == 0, proc.stderr
    assert "2 evaluations" in proc.stdout and "97.000" in proc.stdout
    proc = run_launcher("time_to_quality", [*args, "--split=test"])
    assert proc.returncode == 0, proc.stderr
    assert "1 evaluations" in proc.stdout and "96.000" in proc.stdout


def test_launcher_does_not_train_a_run_that_reached_every_bound(tmp_path):
    """Training mode on a run whose log already reaches the bounds: checked
    against the flags' config (same as resuming), then only the report (no
    TensorFlow, nothing written)."""
    config = configs.override(configs.get_preset("omniglot_fewshot"), channels=32)
    run = fake_run(tmp_path / "run", resumed_run(), config)
    before = sorted(p.name for p in run.iterdir())
    args = ["--preset=omniglot_fewshot", "--quality=100", f"--workdir={run}"]
    proc = run_launcher("time_to_quality", [*args, "--channels=32"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("every bound already reached by step 600")
    assert "omniglot_fewshot (" in proc.stdout
    assert sorted(p.name for p in run.iterdir()) == before
    proc = run_launcher("time_to_quality", [*args, "--channels=16"])
    assert proc.returncode == 2 and "model.channels=32, not 16" in proc.stderr


def test_already_done_needs_the_final_evaluation_at_the_checkpoint(tmp_path):
    """`already_done`, as training decides a run ended: a run with a
    checkpoint is done (bounds reached, or --steps) only with summary.json of
    that step; one stopped in its final evaluation is trained again (which
    evaluates it). A log without a checkpoint has nothing to resume."""
    run = fake_run(tmp_path / "run", resumed_run())
    assert ttq.already_done(run, [100], 10_000, "test").startswith(
        "every bound already reached by step 600"
    )
    assert ttq.already_done(run, [90], 10_000, "test") == ""
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ckpt-600.index").write_text("")
    assert ttq.already_done(run, [100], 10_000, "test") == ""
    assert ttq.already_done(run, [90], 600, "test") == ""
    (run / "summary.json").write_text(json.dumps({"step": 450}))
    assert ttq.already_done(run, [100], 600, "test") == ""
    (run / "summary.json").write_text(json.dumps({"step": 600}))
    assert ttq.already_done(run, [100], 10_000, "test").startswith("every bound")
    assert ttq.already_done(run, [90], 600, "test") == (
        "already trained to step 600 (--steps=600)"
    )
    assert ttq.already_done(run, [90], 601, "test") == ""
    assert ttq.already_done(run, [100], 10_000, "valid") == ""
    assert ttq.already_done(tmp_path, [100], 1, "test") == ""  # No log.
    # Rows past the checkpoint (a kill before it) do not count: the resumed
    # run drops them. 95.0 is logged at 600, the checkpoint is at 450.
    (run / "checkpoints" / "ckpt-600.index").unlink()
    (run / "checkpoints" / "ckpt-450.index").write_text("")
    (run / "summary.json").write_text(json.dumps({"step": 450}))
    assert ttq.already_done(run, [96], 10_000, "test") == ""
    assert ttq.already_done(run, [100], 10_000, "test").startswith("every bound")


def test_patience_rule_watches_the_best_evaluation():
    """`plateaued`: the best (earliest of ties) evaluation's step once the
    latest is `patience` steps past it; the watched split is valid if any."""
    rows = [train(100, 10), evaluation(100, 120.0), train(200, 10)]
    rows += [evaluation(200, 110.0), train(300, 10), evaluation(300, 111.0)]
    rows += [train(400, 10), evaluation(400, 110.0)]
    assert ttq.plateaued(rows, 200, "test") == 200
    assert ttq.plateaued(rows, 201, "test") is None
    assert (
        ttq.plateaued(rows + [train(500, 10), evaluation(500, 109.9)], 1, "test")
        is None
    )
    assert ttq.plateaued(rows, 100, "valid") is None  # No such evaluation.
    assert ttq.plateau_split(["train", "test", "valid"]) == "valid"
    assert ttq.plateau_split(["train", "test"]) == "test"
    assert ttq.plateau_split(["train"]) is None


def test_plateaued_at_reads_the_rows_up_to_the_restored_step():
    """`plateaued_at`: rows past the restored step (a run stopped before
    their checkpoint) do not count; patience 0 turns the rule off."""
    rows = [train(100, 10), evaluation(100, 100.0), train(200, 10)]
    rows += [evaluation(200, 101.0), train(300, 10), evaluation(300, 102.0)]
    assert ttq.plateaued_at(rows, 300, 200) == ("test", 100)
    assert ttq.plateaued_at(rows, 200, 200) is None  # Step 300 is not restored.
    assert ttq.plateaued_at(rows, 300, 0) is None
    assert ttq.plateaued_at([train(100, 10)], 100, 1) is None  # No evaluation.


def test_with_patience_reads_the_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [train(100, 10), evaluation(100, 100.0), train(200, 10)]
    rows.append(evaluation(200, 101.0))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ttq.with_patience(None, 0, path) is None
    stop = ttq.with_patience(lambda records: False, 100, path)
    assert stop([evaluation(200, 101.0)])
    assert not ttq.with_patience(None, 101, path)([evaluation(200, 101.0)])
    assert not ttq.with_patience(None, 1, tmp_path / "none.jsonl")([])
    assert ttq.plateau_message([], 1) is None


def test_stop_when_refuses_a_split_the_run_does_not_evaluate():
    """A --split that is never evaluated periodically could never stop the
    run: refused at the first evaluation, with the splits it has."""
    stop = ttq.stop_when([100], "valid")
    assert stop([evaluation(10, 99.0, "valid"), evaluation(10, 200.0, "valid_m2")])
    assert not stop([evaluation(10, 101.0, "valid")])
    stop = ttq.stop_when([100], "test")  # MNIST's periodic split is valid.
    with pytest.raises(configs.ConfigError) as error:
        stop([evaluation(10, 1.0, "valid_m2"), evaluation(10, 1.0, "valid")])
    assert str(error.value) == (
        "--split=test is not evaluated periodically by this run "
        "(it evaluates valid, valid_m2); rerun with one of them"
    )
