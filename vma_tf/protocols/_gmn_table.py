"""`gmn_table`: the paper's Table 1 (GMN split).

Sequences of 20 test images from C characters; each image after the first T
is a target with memory = the first T images. Targets T+1..20 of one sequence
are exchangeable, so all of them are evaluated against the same memory (one
batch per sequence). Each finished (C, T) cell is kept on disk (`CellCache`), so
a rerun of an interrupted evaluation resumes at the first missing cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vma_tf.configs import ConfigError
from vma_tf.protocols.common import (
    BoundOptions,
    CellCache,
    Result,
    Run,
    bound_over,
    require,
)

# Images per sequence.
LENGTH = 20


@dataclasses.dataclass(frozen=True)
class GmnTableOptions(BoundOptions):
    """Options of `gmn_table`.

    Attributes:
        num_samples: K of the bound.
        num_examples: sequences per number of characters C (0: 10).
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed (also draws the sequences).
        jit: compile with XLA.
        classes: the numbers of characters C of a sequence (rows).
        shots: the numbers of images in memory T (columns), each < 20.
    """

    protocol = "gmn_table"
    classes: Sequence[int] = (1, 2, 4, 16)
    shots: Sequence[int] = (1, 2, 3, 4, 5, 10, 19)


def gmn_sequences(
    images: np.ndarray, num_classes: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One sequence of `length` images from `num_classes` random characters.

    Each position's character is uniform over the chosen ones; each character
    contributes distinct drawings.

    Args:
        images: `[characters, drawings, H, W]` images.
        num_classes: characters in the sequence.
        length: images in the sequence (at most `drawings` of a character).
        rng: the draws' generator.

    Returns:
        `(images [length, H, W, 1] float32, labels [length] int)`.
    """
    chars = rng.choice(images.shape[0], size=num_classes, replace=False)
    which = rng.integers(0, num_classes, size=length)
    perms = np.stack([rng.permutation(images.shape[1]) for _ in chars])
    seen = np.zeros(num_classes, int)
    out = []
    for w in which:
        out.append(images[chars[w], perms[w, seen[w]]])
        seen[w] += 1
    return np.asarray(out, np.float32)[..., None], chars[which]


def table_sequences(
    images: np.ndarray, classes: Sequence[int], per_row: int, seed: int
) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """`gmn_table`'s sequences: `per_row` of them for each C in `classes`.

    Rows are drawn in the order of `classes` from one generator seeded with
    `[seed, 1]`, so a row's first sequences do not depend on `per_row` or on
    the rows after it (the tools that probe single cells rely on this).

    Returns:
        `{C: [(images [20, H, W, 1], labels [20]), ...]}`.
    """
    rng = np.random.default_rng([seed, 1])
    return {
        n: [gmn_sequences(images, n, LENGTH, rng) for _ in range(per_row)]
        for n in classes
    }


def gmn_table(run: Run, options: GmnTableOptions | None = None, **keywords) -> Result:
    """Table 1: NLL of images T+1..20 given the first T of a sequence.

    Each sequence holds 20 test images of C characters (`gmn_sequences`).

    Args:
        run: a restored episodic Omniglot VMA run (`load`).
        options: `GmnTableOptions` (default: the defaults).
        **keywords: `GmnTableOptions` fields, overriding `options`.

    Returns:
        `({"table": {"C=c,T=t": {metric: {"mean", "stderr"}, "num_examples"}},
        "classes", "shots", "sequences_per_row", "num_samples"}, {})`.

    Raises:
        ConfigError: an unknown option, a run of another kind, or a T >= 20.
    """
    o = GmnTableOptions.resolve(options, keywords)
    from vma_tf import evaluation
    from vma_tf.data.experiments import episodic_splits

    c = run.config
    require(
        run,
        "gmn_table",
        c.model.kind == "vma" and c.data.task == "episodes",
        "an episodic Omniglot VMA run",
    )
    _, test = episodic_splits(c)
    if max(o.shots) >= LENGTH:
        raise ConfigError(f"gmn_table shots must be < {LENGTH}")
    stream = evaluation.StreamedBound(run.model, o.chunk_size, o.jit)
    per_row = o.num_examples or 10
    sequences = table_sequences(test.images, o.classes, per_row, o.seed)
    cells = CellCache(run, o)
    table = {}
    for n in o.classes:
        for t in o.shots:
            batches = ({"x": seq[t:], "memory": seq[:t]} for seq, _ in sequences[n])
            table[f"C={n},T={t}"] = cells(
                f"C={n},T={t}",
                lambda b=batches: bound_over(stream, b, o.num_samples, o.seed),
            )
    cells.finish()
    return {
        "table": table,
        "classes": list(o.classes),
        "shots": list(o.shots),
        "sequences_per_row": per_row,
        "num_samples": o.num_samples,
    }, {}
