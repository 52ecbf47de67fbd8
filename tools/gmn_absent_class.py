"""Table 1's C > 1 cells, per target: own character in memory or not.

    python tools/gmn_absent_class.py WORKDIR NUM_SAMPLES C T [SEQUENCES]

For the protocol's own sequences of row C (`gmn_table`'s draws with seed 0 and
40 sequences per row, as `launchers.reproduce` runs it), each target after the
first T images is scored with K importance samples given memory = the first T,
and the per-target bounds are split by whether a drawing of the target's own
character is among them (RESULTS.md "Table 1's C > 1 rows").
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

PER_ROW = 40  # launchers.reproduce's --num_examples for gmn_table.
ROWS = (1, 2, 4, 16)  # gmn_table's default classes, drawn in this order.


def main(workdir: str, num_samples: int, classes: int, shots: int, count: int) -> None:
    from vma_tf import evaluation
    from vma_tf.data.experiments import episodic_splits
    from vma_tf.experiment import load_run
    from vma_tf.protocols._gmn_table import LENGTH, gmn_sequences

    if classes not in ROWS:
        sys.exit(f"C must be one of {ROWS}; got {classes}")
    config, model, _, step = load_run(workdir)
    _, test = episodic_splits(config)
    stream = evaluation.StreamedBound(model, 100, config.train.jit)
    rng = np.random.default_rng([0, 1])  # gmn_table's draws with seed 0.
    rows = {
        n: [gmn_sequences(test.images, n, LENGTH, rng) for _ in range(PER_ROW)]
        for n in ROWS
    }
    present, absent, kl_present, kl_absent = [], [], [], []
    for i, (seq, labels) in enumerate(rows[classes][:count]):
        out = stream(seq[shots:], seq[:shots], num_samples, seed=(0, i))
        nll, kl_a = out["nll_bound"], out["kl_a"]
        own = np.isin(labels[shots:], labels[:shots])
        present += list(nll[own])
        absent += list(nll[~own])
        kl_present += list(kl_a[own])
        kl_absent += list(kl_a[~own])
    print(
        f"step {step}, K = {num_samples}, C = {classes}, T = {shots}, {count} sequences"
    )
    for name, v, k in (
        ("own character in memory", present, kl_present),
        ("own character absent", absent, kl_absent),
    ):
        if v:
            v = np.asarray(v)
            print(
                f"{name:24s} n={len(v):4d}  nll_bound {v.mean():7.2f} ± {v.std(ddof=1) / len(v) ** 0.5:4.2f}  kl_a {np.mean(k):.2f}"
            )
    both = np.asarray(present + absent)
    print(f"{'all':24s} n={len(both):4d}  nll_bound {both.mean():7.2f}")


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(
            "usage: python tools/gmn_absent_class.py WORKDIR NUM_SAMPLES C T [SEQUENCES]"
        )
    a = sys.argv
    main(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]) if len(a) == 6 else PER_ROW)
