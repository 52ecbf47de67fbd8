"""tools/budget_curves.py: bounds at step budgets from metrics.jsonl (no TensorFlow)."""

import json

import pytest
from helpers import load_tool

TOOL = load_tool("budget_curves")


def _run(path, evals, rate=10.0, trained_to=None, split="test"):
    rows = []
    for step, bound in evals:
        rows.append({"split": "train", "step": step, "steps_per_sec": rate})
        rows.append({"split": split, "step": step, "nll_bound": bound})
    if trained_to:  # Stopped between two evaluations.
        rows.append({"split": "train", "step": trained_to, "steps_per_sec": rate})
    path.mkdir()
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_budget_table_reads_the_last_evaluation_before_each_budget(tmp_path, capsys):
    a = _run(tmp_path / "a", [(1000, 120.0), (2000, 100.0), (3000, 95.0)])
    b = _run(tmp_path / "b", [(1000, 130.0)], trained_to=2800)
    code = TOOL.main(
        [
            f"--run=A={a}:90",
            f"--run=B={b}",
            "--budgets=1500,3000",
            "--out",
            str(tmp_path / "c.png"),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and (tmp_path / "c.png").is_file()
    assert out[0].split(" | ")[2:4] == ["1.5k", "3k"]
    # A: 1500 -> the 1000-step evaluation; 3000 -> 95; 300 s of training.
    assert out[2] == "| A | 90.0 | 120.0 | 95.0 | 3000 | 95.0 | 0.1 |"
    # B trained to 2800 steps (280 s), evaluated at 1000 only: the 1000-step
    # bound at 1500, none at 3000; its last step is the last trained one.
    assert out[3] == "| B | – | 130.0 | – | 2800 | 130.0 | 0.1 |"


@pytest.mark.parametrize("arg", ["A", "=x", "A=x:notanumber"])
def test_bad_run_argument_is_one_line_error(arg, capsys):
    assert TOOL.main([f"--run={arg}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --run=") and err.count("\n") == 1


def test_each_run_is_read_on_its_periodic_split(tmp_path, capsys):
    """An MNIST run evaluates `valid` periodically and `test` once at the end:
    its curve is the `valid` one unless --split says."""
    a = _run(tmp_path / "a", [(1000, 120.0), (2000, 100.0)], split="valid")
    with (a / "metrics.jsonl").open("a") as f:
        f.write("\n" + json.dumps({"split": "test", "step": 2000, "nll_bound": 99.0}))
    b = _run(tmp_path / "b", [(1000, 130.0), (2000, 110.0)])
    assert TOOL.main([f"--run=A={a}", f"--run=B={b}", "--budgets=1000,2000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| A | – | 120.0 | 100.0 |")
    assert out[3].startswith("| B | – | 130.0 | 110.0 |")
    assert TOOL.main([f"--run=A={a}", "--budgets=1000,2000", "--split=test"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("| A | – | – | 99.0 |")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budgets=5k"], "--budgets='5k' must be increasing positive step counts"),
        (["--budgets=2000,1000"], "--budgets='2000,1000' must be increasing"),
        (["--budgets=0"], "--budgets='0' must be increasing"),
        (["--out={tmp}/c.txt"], "--out={tmp}/c.txt must end in a figure suffix"),
        (["--out={tmp}/no/c.png"], "{tmp}/no does not exist"),
    ],
)
def test_bad_budgets_and_out_are_one_line_errors(args, message, tmp_path, capsys):
    """Checked before any run is read or figure written."""
    a = _run(tmp_path / "a", [(1000, 120.0)])
    args = [x.format(tmp=tmp_path) for x in args]
    assert TOOL.main([f"--run=A={a}", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert message.format(tmp=tmp_path) in captured.err
