"""Table 1's C = 1 row, per sequence: the bound given one drawing against two.

    python tools/gmn_single_template.py ~/vma_runs/long/gmn 200

For the protocol's own C = 1 sequences (`gmn_table`'s draws with seed 0: its first
row), targets 3..20 of each sequence are scored with K importance samples given
memory = drawing 1 (T = 1), drawings 1-2 (T = 2), and drawing 2 alone, so that T = 1
and T = 2 are compared on the same targets and the effect of *which* single
drawing is in memory is visible (RESULTS.md "The C = 1, T = 1 cell").
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main(workdir: str, num_samples: int) -> None:
    from launchers.common import import_tensorflow_quietly

    import_tensorflow_quietly()  # Without the CPU start-up notices.
    from vma_tf import evaluation
    from vma_tf.data.experiments import episodic_splits
    from vma_tf.experiment import load_run
    from vma_tf.protocols._gmn_table import table_sequences

    config, model, _, step = load_run(workdir)
    _, test = episodic_splits(config)
    stream = evaluation.StreamedBound(model, 100, config.train.jit)
    sequences = table_sequences(test.images, (1,), 10, 0)[1]  # gmn_table's first row.
    print(f"step {step}, K = {num_samples}")
    means = {"T=1": [], "T=2": []}
    for i, (seq, labels) in enumerate(sequences):
        bound = lambda memory: float(
            stream(seq[2:], memory, num_samples, seed=(0, i))["nll_bound"].mean()
        )
        t1, t2, other = bound(seq[:1]), bound(seq[:2]), bound(seq[1:2])
        means["T=1"].append(t1)
        means["T=2"].append(t2)
        print(
            f"seq {i} char {labels[0]:4d}: T=1 {t1:7.2f}  T=2 {t2:7.2f}  "
            f"memory=drawing0 {t1:7.2f} drawing1 {other:7.2f}"
        )
    print(
        f"mean T=1 {np.mean(means['T=1']):.2f}  T=2 {np.mean(means['T=2']):.2f}  "
        f"median T=1 {np.median(means['T=1']):.2f} T=2 {np.median(means['T=2']):.2f}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/gmn_single_template.py WORKDIR NUM_SAMPLES")
    main(sys.argv[1], int(sys.argv[2]))
