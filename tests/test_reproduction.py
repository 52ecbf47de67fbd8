"""The paper rows (`vma_tf.reproduction`, `launchers.reproduce`): every row's
commands are valid configs and protocol options; the report and the skip
rules read fake run directories. No TensorFlow, no training."""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO, run_launcher

from launchers.common import _IntListParser
from vma_tf import configs, protocols, reproduction


def parse_train(argv):
    """The config `launchers.train` builds from `train_command` arguments."""
    values, preset = {}, None
    for arg in argv[1:]:
        name, _, value = arg[2:].partition("=")
        if name.startswith("config."):  # --config.SECTION.NAME
            name = name.rpartition(".")[2]
        if name == "preset":
            preset = value
        elif name not in ("workdir", "noprogress"):
            spec = configs.field_spec(name)
            parse = _IntListParser().parse if spec.type is tuple else spec.type
            values[name] = parse(value)
    return configs.override(configs.get_preset(preset), **values)


@pytest.mark.parametrize("row", reproduction.ROWS, ids=lambda r: r.name)
def test_every_row_is_valid_configs_and_protocol_options(row, tmp_path):
    names = {t.name for t in row.trainings}
    for t in row.trainings:
        config = parse_train(reproduction.train_command(t, tmp_path))
        configs.validate(config)
        if config.data.dataset == "omniglot_bgeval":  # The model its rows measured.
            assert config.model.hidden_units == (128,), t.name
            assert config.model.prior_z_init == "glorot", t.name
        assert config.train.precision == "mixed_bfloat16" == reproduction.PRECISION
        paper = reproduction.train_command(t, tmp_path, precision="float32")
        assert parse_train(paper).train.precision == "float32"
        assert parse_train(paper).train.lr_drop_step == 0
        dropped = parse_train(
            reproduction.train_command(t, tmp_path, lr_drop_step=45000)
        )
        configs.validate(dropped)
        if t.base:  # A continuation: its own steps and rate, from its base.
            assert t.base in names and t.steps > 0
            assert config.train.init_from == str(tmp_path / t.base)
            assert (config.train.steps, config.train.patience) == (t.steps, 0)
            assert dropped == config and config.train.learning_rate == 1e-4
            continue
        assert config.train.init_from is None
        assert config.train.steps == reproduction.STEPS
        assert config.train.patience == reproduction.PATIENCE
        assert dropped.train.learning_rate_at(44999) == dropped.train.learning_rate
        assert dropped.train.learning_rate_at(45000) == 1e-4
    for e in row.evaluations:
        assert set(e.runs) <= names
        options = protocols.REGISTRY[e.protocol].options
        assert (len(e.runs) > 1) == options.several_runs
        given = {f[2:].partition("=")[0] for f in e.flags}
        assert given <= set(options.names()), (e.protocol, given)
        assert e.headline


def test_wanted_options_are_what_evaluate_records_for_the_rows_flags():
    """`evaluated` compares a report's options with `wanted_options`: they
    must be what `launchers.evaluate` records given the row's flags."""
    cases = [(e.protocol, e.flags) for r in reproduction.ROWS for e in r.evaluations]
    script = """
import json, sys
from launchers import evaluate as ev
out = []
for protocol, flags in json.loads(sys.argv[1]):
    ev.FLAGS.unparse_flags()
    ev.FLAGS(["evaluate", "--workdir=.", f"--protocol={protocol}", *flags])
    out.append(ev._recorded(ev._protocol_options(protocol)))
print(json.dumps({"recorded": out, "flags": [*ev.OPTION_FLAGS, "precision"]}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=True,
        cwd=pathlib.Path(__file__).parents[1],
    )
    printed = json.loads(proc.stdout)
    for (protocol, flags), options in zip(cases, printed["recorded"], strict=True):
        e = reproduction.Evaluation(protocol, ("run",), flags)
        wanted = reproduction.wanted_options(e)
        # Every option with a flag is recorded (the others keep their defaults).
        flagged = {n for n in wanted if n in printed["flags"]}
        assert "precision" in flagged and flagged <= set(options), (e, flagged)
        for name in flagged:
            assert reproduction._option_text(options[name]) == wanted[name], (e, name)


def test_a_shared_run_is_one_training():
    """The few-shot VMA serves four rows and is trained once."""
    names = [t.name for t in reproduction.trainings(reproduction.ROWS)]
    assert len(names) == len(set(names))
    assert names.count("fewshot_vma_c48") == 1
    with pytest.raises(ValueError, match="unknown row.*table9.*fewshot"):
        reproduction.select(["table9"])


def train_row(step, rate=2.0):
    return {"split": "train", "step": step, "nll_bound": 0.0, "steps_per_sec": rate}


def fake_run(path, evals, last, saved=None):
    """A run dir whose metrics log every 1000 steps (500 s each, so 11000
    steps are 1.5 h) to `last`, with test evaluations `{step: bound}`,
    checkpoints (empty files) every 1000 steps to `saved` (default `last`)
    and summary.json of that step."""
    path.mkdir(parents=True)
    rows = []
    for step in range(1000, last + 1, 1000):
        rows.append(train_row(step))
        if step in evals:
            rows.append({"split": "test", "step": step, "nll_bound": evals[step]})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "checkpoints").mkdir(exist_ok=True)
    for step in range(1000, (last if saved is None else saved) + 1, 1000):
        (path / "checkpoints" / f"ckpt-{step}.index").touch()
    summary = {"step": last if saved is None else saved}
    (path / "summary.json").write_text(json.dumps(summary))


def fake_config(path):
    """config.json of the fake run `path` as its row's command trains it
    (what `--action=run` checks before skipping it as trained)."""
    trainings = {t.name: t for t in reproduction.trainings(reproduction.ROWS)}
    command = reproduction.train_command(trainings[path.name], path.parent)
    (path / "config.json").write_text(parse_train(command).to_json())


def test_report_and_skip_rules(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "gmn", {5000: 120.0, 10000: 100.0, 11000: 101.0}, 11000)
    row = reproduction.ROWS_BY_NAME["gmn_table"]
    (table,) = row.evaluations
    assert reproduction.trained_to(runs / "gmn", 50_000, 10_000) == ""
    assert "trained to step 11000" in reproduction.trained_to(runs / "gmn", 11000, 0)
    assert reproduction.evaluated(table, runs) is None
    cell = lambda t: {"nll_bound": {"mean": 90.0 + t, "stderr": 1.0}}
    results = {"table": {f"C=1,T={t}": cell(t) for t in (1, 5)}}
    report = {"workdirs": [str(runs / "gmn")], "steps": [11000], "results": results}
    (runs / "gmn" / "eval").mkdir()
    (runs / "gmn" / "eval" / "gmn_table.json").write_text(json.dumps(report))
    assert reproduction.evaluated(table, runs) == report
    path = runs / "gmn" / "eval" / "gmn_table.json"
    # A report made with other options than the row's is not the row's; a
    # report lacking an option (made before it existed) ran with its default;
    # the speed-only options do not matter.
    options = {"num_samples": 1000, "num_examples": 40, "seed": 0, "chunk_size": 100}
    options |= {"classes": [1, 2, 4, 16], "split": "test", "precision": "float32"}
    for other, taken in (
        ({}, True),
        ({"split": "train"}, False),  # `--split=train`: the training characters
        ({"classes": [1]}, False),  # The other rows "not evaluated"
        ({"with_replacement": True}, False),
        ({"num_samples": 100}, False),
        ({"num_examples": 0}, False),
        ({"seed": 1}, False),
        ({"precision": "mixed_bfloat16"}, False),
        ({"chunk_size": 10, "jit": False}, True),
    ):
        path.write_text(json.dumps({**report, "options": options | other}))
        assert (reproduction.evaluated(table, runs) is not None) == taken, other
    path.write_text(json.dumps(report))
    text = reproduction.report_rows([row], runs)
    assert "| gmn | 11000 | 1.5 | - | 120.0 | 100.0 | - | - |" in text
    (runs / "gmn" / "config.json").write_text('{"train": {"precision": "float32"}}')
    text = reproduction.report_rows([row], runs)
    assert "| gmn | 11000 | 1.5 | float32 | 120.0 | 100.0 | - | - |" in text
    for train in ({"lr_after_drop": 5e-5}, {}):  # {}: a config from before the key
        train.update(precision="float32", lr_drop_step=9000)
        (runs / "gmn" / "config.json").write_text(json.dumps({"train": train}))
        text = reproduction.report_rows([row], runs)
        rate = train.get("lr_after_drop", 1e-4)
        assert f"| gmn | 11000 | 1.5 | float32, {rate:g} from 9000 | 120.0 |" in text
    assert (
        "gmn_table of gmn (step 11000): C=1,T=1 91.0 (paper 86.5, 4.5 behind), "
        "C=1,T=5 95.0 (paper 76.5, 18.5 behind), C=1,T=19 - (paper 73.9)"
    ) in text
    # Against the paper: T = 1 outside the 3-nat target, T = 19 not evaluated.
    assert "| gmn_table | gmn | C=1,T=1 | 86.5 | 91.0 | +4.5 | no |" in text
    assert "| gmn_table | gmn | C=1,T=19 | 73.9 | - | - | not evaluated |" in text
    results["table"]["C=1,T=1"] = cell(-4.0)  # 86.0: 0.5 nats ahead
    results["table"]["C=1,T=5"] = cell(-10.5)  # 79.5: 3.0 behind, the edge
    (runs / "gmn" / "eval" / "gmn_table.json").write_text(json.dumps(report))
    text = reproduction.report_rows([row], runs)
    assert "C=1,T=1 86.0 (paper 86.5, 0.5 ahead)" in text
    assert "| gmn_table | gmn | C=1,T=1 | 86.5 | 86.0 | -0.5 | yes |" in text
    assert "| gmn_table | gmn | C=1,T=5 | 76.5 | 79.5 | +3.0 | yes |" in text
    curves, papers = reproduction.curves([row], runs)
    points = [(5000, 120.0, 2500.0), (10000, 100.0, 5000.0), (11000, 101.0, 5500.0)]
    assert curves == {"gmn": points} and papers == {"gmn": None}
    # The run trains on: the evaluation is stale.
    fake_run(runs / "gmn2", {}, 12000)
    (runs / "gmn" / "metrics.jsonl").write_text(
        (runs / "gmn2" / "metrics.jsonl").read_text()
    )
    assert reproduction.evaluated(table, runs) == report  # Not saved yet.
    (runs / "gmn" / "checkpoints" / "ckpt-12000.index").touch()
    assert reproduction.evaluated(table, runs) is None


def test_a_run_stopped_before_its_last_checkpoint_is_trained_and_evaluated(tmp_path):
    """Its log reaches step 11000, its checkpoints 10000 (a stop during the
    final evaluation): it is not trained to 11000, and its evaluation is of
    the step it resumes from; a cut-short last log line is left out."""
    runs = tmp_path / "runs"
    fake_run(runs / "gmn", {10000: 100.0, 11000: 101.0}, 11000, saved=10000)
    (table,) = reproduction.ROWS_BY_NAME["gmn_table"].evaluations
    assert reproduction.trained_to(runs / "gmn", 11000, 0) == ""
    assert "trained to step 10000" in reproduction.trained_to(runs / "gmn", 10000, 0)
    # Stopped in the final evaluation at 10000: no summary of it, so the
    # training command runs again (to evaluate, summarise and draw samples).
    (runs / "gmn" / "summary.json").write_text(json.dumps({"step": 9000}))
    assert reproduction.trained_to(runs / "gmn", 10000, 0) == ""
    (runs / "gmn" / "summary.json").unlink()
    assert reproduction.trained_to(runs / "gmn", 10000, 0) == ""
    (runs / "gmn" / "summary.json").write_text(json.dumps({"step": 10000}))
    (runs / "gmn" / "eval").mkdir()
    path = runs / "gmn" / "eval" / "gmn_table.json"
    for steps, up_to_date in (([11000], False), ([10000], True)):
        report = {"workdirs": [str(runs / "gmn")], "steps": steps, "results": {}}
        path.write_text(json.dumps(report))
        assert (reproduction.evaluated(table, runs) is not None) == up_to_date
    # The patience rule reads the log up to the checkpoint: step 11000's
    # (worse) bound is not counted.
    fake_run(runs / "flat", {1000: 90.0, 5000: 95.0, 6000: 80.0}, 6000, saved=5000)
    assert "no better test bound since step 1000" in reproduction.trained_to(
        runs / "flat", 50_000, 4000
    )
    with open(runs / "flat" / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 7000, "lo')
    assert "since step 1000" in reproduction.trained_to(runs / "flat", 50_000, 4000)
    text = reproduction.report_rows([reproduction.ROWS_BY_NAME["gmn_table"]], runs)
    assert "| gmn | 10000 |" in text


def test_launcher_lists_and_runs_nothing_when_done(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "gmn", {1000: 150.0, 2000: 140.0}, 2000)
    proc = run_launcher("reproduce", ["--rows=gmn_table", f"--runs_dir={runs}"])
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines()[1:]]
    assert "--precision=mixed_bfloat16" in commands[0]
    assert commands[0][:4] == [
        "python",
        "-m",
        "launchers.train",
        "--preset=omniglot_gmn",
    ]
    assert commands[1][-3:] == [
        "--protocol=gmn_table",
        "--num_samples=1000",
        "--num_examples=40",
    ]
    report = {"workdirs": [str(runs / "gmn")], "steps": [2000], "results": {}}
    (runs / "gmn" / "eval").mkdir()
    (runs / "gmn" / "eval" / "gmn_table.json").write_text(json.dumps(report))
    figure = tmp_path / "curves.png"
    args = ["--action=report", "--rows=gmn_table", f"--runs_dir={runs}"]
    proc = run_launcher("reproduce", [*args, f"--figure={figure}"])
    assert proc.returncode == 0 and figure.is_file(), proc.stderr
    assert "| gmn | 2000 | 0.3 | - | - | - | - | - |" in proc.stdout
    proc = run_launcher("reproduce", ["--rows=gmn_table", "--precision=float32"])
    assert proc.returncode == 0, proc.stderr
    assert "--precision=float32 --seed=0" in proc.stdout.splitlines()[1]
    args = ["--action=run", "--rows=gmn_table", f"--runs_dir={runs}", "--steps=2000"]
    fake_config(runs / "gmn")
    proc = run_launcher("reproduce", args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "skip training gmn: trained to step 2000",
        "skip gmn_table of gmn: up to date",
    ]


def test_a_run_trained_otherwise_is_not_skipped_as_done(tmp_path):
    """A run trained to the rule but not as the row's command asks is refused
    in one line, not skipped and reported: the older model under the row's
    name, or a learning-rate drop asked of a run trained without one."""
    runs = tmp_path / "runs"
    fake_run(runs / "gmn", {1000: 150.0, 2000: 140.0}, 2000)
    fake_config(runs / "gmn")
    config = json.loads((runs / "gmn" / "config.json").read_text())
    args = ["--action=run", "--rows=gmn_table", f"--runs_dir={runs}", "--steps=2000"]
    proc = run_launcher("reproduce", [*args, "--lr_drop_step=1000"])
    assert proc.returncode == 2 and not proc.stdout, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        "error: gmn is trained, but not as asked: --lr_drop_step=1000 would change"
    )
    config["model"]["hidden_units"] = [128]  # The preset's model until 2026-12-07.
    (runs / "gmn" / "config.json").write_text(json.dumps(config))
    proc = run_launcher("reproduce", args)
    assert proc.returncode == 2 and not proc.stdout, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"error: gmn is trained, but not as asked: --workdir={runs / 'gmn'} holds a "
        "run with model.hidden_units=(128,), not (); use another --workdir or the "
        "same flags to resume"
    )


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_launcher_runs_a_chosen_run_and_its_evaluations_only(tmp_path):
    """--runs: one run of the rows (one lane of two processes); evaluations
    that need another run are left to that lane."""
    runs = tmp_path / "runs"
    fake_run(runs / "fewshot_vae_c48", {1000: 150.0}, 1000)
    fake_config(runs / "fewshot_vae_c48")
    args = ["--action=run", "--rows=fewshot", f"--runs_dir={runs}", "--steps=1000"]
    proc = run_launcher("reproduce", [*args, "--runs=fewshot_vae_c48", "--patience=0"])
    # launchers.evaluate fails (a fake run has no real checkpoint); reproduce stops.
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        "error: exit 2: python -m launchers.evaluate"
    )
    assert proc.stdout.splitlines()[:2] == [
        "skip training fewshot_vae_c48: trained to step 1000",
        (
            "+ python -m launchers.evaluate "
            f"--workdir={runs}/fewshot_vae_c48 --protocol=nll --num_samples=1000 "
            "--num_examples=320"
        ),
    ]
    proc = run_launcher("reproduce", [*args, "--runs=fewshot_vae_c48", "--threads=1"])
    assert proc.stdout.splitlines()[1].startswith(
        "+ TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python -m launchers.evaluate"
    )


def test_thread_env():
    assert reproduction.thread_env(0) == {}
    assert reproduction.thread_env(1) == {
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
    }
    with pytest.raises(ValueError, match="threads must be >= 0"):
        reproduction.thread_env(-1)


def test_against_the_paper_scores_bounds_and_accuracies_each_their_way(tmp_path):
    """A bound is behind when above the paper's, an accuracy when below; an
    unscored number (a KL term) shows the paper's value but no verdict; a
    `|` in a label is escaped in the markdown table."""
    runs = tmp_path / "runs"
    for name in ("fewshot_vma_c48", "fewshot_vma_c48_m1", "fewshot_vma_c48_m8"):
        fake_run(runs / name, {}, 2000)
    vma = runs / "fewshot_vma_c48"
    (vma / "eval").mkdir()
    accuracy = {"5-way 1-shot": 0.93, "20-way 1-shot": 0.70}
    results = {
        "settings": {s: {"q(a|x)": {"accuracy": a}} for s, a in accuracy.items()}
    }
    report = {"workdirs": [str(vma)], "steps": [2000], "results": results}
    (vma / "eval" / "classification.json").write_text(json.dumps(report))
    text = reproduction.report_rows([reproduction.ROWS_BY_NAME["classification"]], runs)
    assert "5-way 1-shot q(a|x) 93.0 % (paper 91, 2.0 ahead)" in text
    assert "20-way 1-shot q(a|x) 70.0 % (paper 77, 7.0 behind)" in text
    assert (
        "| fewshot_vma_c48 | 5-way 1-shot q(a\\|x) | 91 | 93.0 % | -2.0 | yes |" in text
    )
    assert (
        "| fewshot_vma_c48 | 20-way 1-shot q(a\\|x) | 77 | 70.0 % | +7.0 | no |" in text
    )
    # The KL breakdown: its kl terms carry the paper's value, not a verdict.
    names = [
        str(runs / n)
        for n in ("fewshot_vma_c48_m1", "fewshot_vma_c48", "fewshot_vma_c48_m8")
    ]
    term = lambda v: {"mean": v, "stderr": 0.1}
    per_run = {
        n: {"kl_a": term(1.5), "kl_z": term(30.0), "nll_bound": term(80.0)}
        for n in names
    }
    report = {"workdirs": names, "steps": [2000] * 3, "results": {"runs": per_run}}
    (runs / "fewshot_vma_c48_m1" / "eval").mkdir()
    path = runs / "fewshot_vma_c48_m1" / "eval" / "kl_breakdown.json"
    path.write_text(json.dumps(report))
    text = reproduction.report_rows([reproduction.ROWS_BY_NAME["kl_breakdown"]], runs)
    assert "1/class kl_a 1.5 (paper 2), 1/class kl_z 30.0 (paper 28.2)" in text
    assert "1/class nll_bound 80.0 (paper 75.1, 4.9 behind)" in text
    assert "8/class nll_bound 80.0 (paper 69.1, 10.9 behind)" in text
    assert "| 1/class nll_bound | 75.1 | 80.0 | +4.9 | no |" in text
    assert "kl_a |" not in text.split("### Against the paper")[1]


def test_the_papers_table1_is_the_paper_rows_of_the_gmn_headlines():
    """Each Table 1 row's headlines carry the paper's cells (T = 1, 5, 19)
    of their C; the second anchor the PyTorch VMA's (no T = 5)."""
    assert reproduction.TABLE1[1] == (86.5, 83.0, 79.6, 79.0, 76.5, 76.2, 73.9)
    (e,) = reproduction.ROWS_BY_NAME["gmn_table_per_class"].evaluations
    papers = {h.label: h.paper for h in e.headline}
    assert papers["C=4,T=1"] == 87.5 and papers["C=16,T=19"] == 77.0
    assert papers["C=1,T=5"] == 76.5
    (e,) = reproduction.ROWS_BY_NAME["gmn_table_bgeval"].evaluations
    assert [h.paper for h in e.headline] == [85.2, None, 71.8]


def test_a_continuation_waits_for_its_base_then_trains_its_own_steps(tmp_path):
    """`classification_bgeval_k32` continues `bgeval`: refused while the
    base is short of the step rule, skipped once it has its own steps."""
    runs = tmp_path / "runs"
    fake_run(runs / "bgeval", {1000: 150.0}, 1000)
    args = ["--action=run", "--rows=classification_bgeval_k32", f"--runs_dir={runs}"]
    proc = run_launcher("reproduce", [*args, "--runs=bgeval_k32"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "error: bgeval_k32 continues bgeval: train bgeval to the step rule first"
    )
    fake_run(runs / "bgeval_k32", {}, 3000)
    fake_config(runs / "bgeval_k32")
    proc = run_launcher("reproduce", [*args, "--runs=bgeval_k32"])
    assert (
        proc.stdout.splitlines()[0] == "skip training bgeval_k32: trained to step 3000"
    )
    text = reproduction.report_rows(
        [reproduction.ROWS_BY_NAME["classification_bgeval_k32"]], runs
    )
    assert "| bgeval_k32 | 3000 | 0.4 | mixed_bfloat16, after bgeval |" in text


# Stands in for a training: on SIGINT / SIGTERM it "checkpoints" for a second
# (longer than Python's 0.25 s grace of `subprocess.call`), counts the
# signals it got, and exits 128 + the signal.
CHILD = r"""
import os, signal, sys, time
got = []
def handler(signum, frame):
    got.append(signum)
    if len(got) == 1:
        time.sleep(1.0)
        with open(sys.argv[1], "w") as f:
            f.write(f"{os.getpid()} {len(got)}")
        sys.exit(128 + signum)
signal.signal(signal.SIGINT, handler)
signal.signal(signal.SIGTERM, handler)
open(sys.argv[1] + ".ready", "w").close()
time.sleep(60)
sys.exit(1)
"""

DRIVER = r"""
import sys
from launchers import reproduce
sys.exit(reproduce.call([sys.executable, "-c", sys.argv[1], sys.argv[2]], None))
"""


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_a_signal_to_the_driver_reaches_the_training_once_and_is_awaited(tmp_path, how):
    """Ctrl-C (SIGINT to the terminal's whole foreground group) or SIGTERM
    to the driver alone: the command gets the signal exactly once, the
    driver waits for it to checkpoint and exits with its code."""
    out = tmp_path / "child"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, CHILD, str(out)],
        cwd=REPO,
        start_new_session=True,  # A group of its own, as a terminal's job.
    )
    deadline = time.time() + 60
    while not pathlib.Path(f"{out}.ready").exists():
        assert driver.poll() is None and time.time() < deadline
        time.sleep(0.05)
    if how == "ctrl_c":
        os.killpg(driver.pid, signal.SIGINT)
        code = 128 + signal.SIGINT
    else:
        driver.send_signal(signal.SIGTERM)
        code = 128 + signal.SIGTERM
    assert driver.wait(timeout=60) == code
    pid, count = map(int, out.read_text().split())
    assert count == 1  # Not twice (a second signal stops a training at once).
    with pytest.raises(ProcessLookupError):  # Not left running.
        os.kill(pid, 0)
