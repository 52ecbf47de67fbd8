"""Budget curves of long runs: the periodic bound at fixed step budgets, and a figure.

    python tools/budget_curves.py --run "few-shot VMA=~/vma_runs/long/fewshot_vma_c48:68.8" \
        --run "few-shot VAE=~/vma_runs/long/fewshot_vae_c48:90.8" --out docs/budget_curves.png

Each `--run` is `LABEL=WORKDIR[:PAPER]` (PAPER: the paper's number, drawn as a dashed line).
Prints one Markdown row per run: the periodic bound (K of the training command; the run's
periodic split, `valid` on MNIST and `test` on Omniglot, or `--split`) at each budget (the
last evaluation at or before it), the last step, the best bound and the training time to the
last step (`vma_tf.time_to_quality`; the last step may be past the last evaluation). No
TensorFlow.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vma_tf import plotting  # noqa: E402
from vma_tf import time_to_quality as ttq  # noqa: E402


def parse_run(text: str) -> tuple[str, pathlib.Path, float | None]:
    """`LABEL=WORKDIR[:PAPER]` -> `(label, workdir, paper or None)`."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise ValueError(f"--run={text!r} must be LABEL=WORKDIR[:PAPER]")
    path, _, paper = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        value = float(paper) if paper else None
    except ValueError:
        raise ValueError(f"--run={text!r}: PAPER {paper!r} is not a number") from None
    return label, pathlib.Path(path).expanduser(), value


def parse_budgets(text: str) -> list[int]:
    """`5000,10000` -> `[5000, 10000]`: positive step counts, increasing."""
    try:
        budgets = [int(b) for b in text.split(",")]
    except ValueError:
        budgets = []
    if not budgets or min(budgets) < 1 or budgets != sorted(set(budgets)):
        raise ValueError(
            f"--budgets={text!r} must be increasing positive step counts, "
            "e.g. 5000,10000,20000,50000"
        )
    return budgets


def table(runs, budgets, split: str | None = None) -> tuple[str, dict]:
    """Markdown table and `{label: points}` (each run's periodic split, or
    `split`)."""
    head = [
        "run",
        "paper",
        *(ttq.budget_label(b) for b in budgets),
        "last step",
        "best",
        "train h",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    curves = {}
    for label, workdir, paper in runs:
        rows = ttq.read_metrics(workdir / "metrics.jsonl")
        run_split = split or ttq.periodic_split(rows)
        points = ttq.curve(rows, run_split)
        if not points:
            raise ValueError(f"{workdir}: no {run_split!r} evaluation in metrics.jsonl")
        curves[label] = points
        # The last trained step and the training time to it (of the history
        # a resumed run kept), which may be past the last evaluation.
        last, seconds = ttq.trained_extent(rows)
        best = min(b for _, b, _ in points)
        fmt = lambda v: "–" if v is None else f"{v:.1f}"
        cells = [label, fmt(paper)]
        cells += [fmt(ttq.at_budget(points, b, last)) for b in budgets]
        cells += [str(last), f"{best:.1f}", f"{seconds / 3600:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), curves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True)
    parser.add_argument("--budgets", default="5000,10000,20000,50000")
    parser.add_argument(
        "--split", help="evaluation split read (default: each run's periodic one)"
    )
    parser.add_argument("--out", help="write the figure here (.png, .pdf, .svg, ...)")
    args = parser.parse_args(argv)
    try:
        runs = [parse_run(r) for r in args.run]
        budgets = parse_budgets(args.budgets)
        out = plotting.check_figure_file("--out", args.out) if args.out else None
        text, curves = table(runs, budgets, args.split)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if out:
        plotting.budget_curves(out, curves, {r[0]: r[2] for r in runs})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
