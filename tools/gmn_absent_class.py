"""Table 1's C > 1 cells, per target: own character in memory or not.

    python tools/gmn_absent_class.py WORKDIR NUM_SAMPLES C T [SEQUENCES]

For the protocol's own sequences of row C (`gmn_table`'s draws with seed 0 and
40 sequences per row, as `launchers.reproduce` runs it), each target after the
first T images is scored with K importance samples given memory = the first T,
and the per-target bounds are split by whether a drawing of the target's own
character is among them (RESULTS.md "Table 1's C > 1 rows"). Each group's mean
is printed with two standard errors: over targets (as if independent), and by
sequence (`evaluation.clustered_stderr`: a sequence's targets share its
memory, so this is the one for comparing unpaired numbers; it is larger).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

PER_ROW = 40  # launchers.reproduce's --num_examples for gmn_table.


def main(workdir: str, num_samples: int, classes: int, shots: int, count: int) -> None:
    from launchers.common import import_tensorflow_quietly

    import_tensorflow_quietly()  # Without the CPU start-up notices.
    from vma_tf import evaluation
    from vma_tf.data.experiments import episodic_splits
    from vma_tf.experiment import load_run
    from vma_tf.protocols._gmn_table import GmnTableOptions, table_sequences

    rows = tuple(GmnTableOptions().classes)  # Drawn in this order.
    if classes not in rows:
        sys.exit(f"C must be one of {rows}; got {classes}")
    config, model, _, step = load_run(workdir)
    _, test = episodic_splits(config)
    stream = evaluation.StreamedBound(model, 100, config.train.jit)
    sequences = table_sequences(test.images, rows, PER_ROW, 0)[classes][:count]
    terms = {name: [] for name in ("nll_bound", "kl_a", "kl_z", "recon")}
    own, sequence = [], []
    for i, (seq, labels) in enumerate(sequences):
        out = stream(seq[shots:], seq[:shots], num_samples, seed=(0, i))
        for name, values in terms.items():
            values.append(out[name])
        own.append(np.isin(labels[shots:], labels[:shots]))
        sequence.append(np.full(len(seq) - shots, i))
    terms = {name: np.concatenate(values) for name, values in terms.items()}
    nll, own = terms["nll_bound"], np.concatenate(own)
    sequence = np.concatenate(sequence)
    print(
        f"step {step}, K = {num_samples}, C = {classes}, T = {shots}, {count} sequences"
    )
    for name, mask in (
        ("own character in memory", own),
        ("own character absent", ~own),
    ):
        if mask.any():
            v, ids = nll[mask], sequence[mask]
            by_sequence = evaluation.clustered_stderr([v[ids == i] for i in set(ids)])
            print(
                f"{name:24s} n={len(v):4d}  nll_bound {v.mean():7.2f} ± "
                f"{v.std(ddof=1) / len(v) ** 0.5:4.2f} over targets, ± "
                f"{by_sequence:4.2f} by sequence  kl_a "
                f"{terms['kl_a'][mask].mean():.2f}  kl_z {terms['kl_z'][mask].mean():.2f}"
                f"  recon {terms['recon'][mask].mean():.2f}"
            )
    print(f"{'all':24s} n={len(nll):4d}  nll_bound {nll.mean():7.2f}")


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(
            "usage: python tools/gmn_absent_class.py WORKDIR NUM_SAMPLES C T [SEQUENCES]"
        )
    a = sys.argv
    main(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]) if len(a) == 6 else PER_ROW)
