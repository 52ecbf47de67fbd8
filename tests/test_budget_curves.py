"""tools/budget_curves.py: bounds at step budgets from metrics.jsonl (no TensorFlow)."""

import json

import pytest
from helpers import load_tool

TOOL = load_tool("budget_curves")


def _run(path, evals, rate=10.0, trained_to=None):
    rows = []
    for step, bound in evals:
        rows.append({"split": "train", "step": step, "steps_per_sec": rate})
        rows.append({"split": "test", "step": step, "nll_bound": bound})
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
