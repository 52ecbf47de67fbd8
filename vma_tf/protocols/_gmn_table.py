"""`gmn_table` and `gmn_table_per_class`: the paper's Table 1 (GMN split).

`gmn_table` is GMN's protocol: sequences of 20 test images from C characters;
each image after the first T is a target with memory = the first T images (in
all, so at C > 1 and small T most targets have no drawing of their own
character in memory). Its sequences hold distinct drawings; with
`with_replacement` they are drawn as GMN's own code draws them (characters
and drawings with replacement, so a target can be a copy of an image in
memory: at C = 1 one in 20 targets at T = 1, about 62 % at T = 19), and each
cell also scores the copies and the other targets apart.

`gmn_table_per_class` holds T drawings of *each* of the C characters in
memory (C·T entries) and scores 20 − T other drawings of them,
the setting of Fig. 5A (an optimal model of C disjoint classes scores the
C = 1 row + log C); the paper's VMA rows follow that reference, not GMN's
protocol (RESULTS.md "Table 1 with T drawings per character").

Both draw from the test characters; `split="train"` draws from the training
characters instead (drawings the model was trained on), so that the two tables'
difference measures what the model loses to generalisation.

Targets of one sequence are exchangeable, so all of them are evaluated
against the same memory (one batch per sequence). Each finished (C, T) cell is
kept on disk (`CellCache`), so a rerun of an interrupted evaluation resumes at
the first missing cell.
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
# The splits a table's characters can come from (`_TableOptions.split`).
SPLITS = ("test", "train")


@dataclasses.dataclass(frozen=True)
class _TableOptions(BoundOptions):
    """Options of both Table 1 protocols.

    Attributes:
        num_samples: K of the bound.
        num_examples: sequences per number of characters C (0: 10).
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed (also draws the sequences).
        jit: compile with XLA.
        classes: the numbers of characters C of a sequence (rows).
        shots: the numbers of images in memory T (columns), each < 20.
        split: the characters the sequences are drawn from: `"test"` (the
            table) or `"train"` (the training characters, whose drawings the
            model has seen: the test split's bound minus this one is how much
            the model loses to generalisation).
    """

    classes: Sequence[int] = (1, 2, 4, 16)
    shots: Sequence[int] = (1, 2, 3, 4, 5, 10, 19)
    split: str = "test"


@dataclasses.dataclass(frozen=True)
class GmnTableOptions(_TableOptions):
    """Options of `gmn_table`: those of both Table 1 protocols (`num_samples`,
    `num_examples`: sequences per row, `chunk_size`, `seed`, `jit`,
    `classes`, `shots`) and one more.

    Attributes:
        with_replacement: draw the sequences as GMN's code does (its
            `utils.put_new_data`, github.com/sbos/gmn): the C characters, each
            position's character and its drawing all with replacement, so a
            target can be a copy of an image in memory; default False
            (distinct drawings).
    """

    protocol = "gmn_table"
    with_replacement: bool = False


def gmn_sequences(
    images: np.ndarray,
    num_classes: int,
    length: int,
    rng: np.random.Generator,
    with_replacement: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One sequence of `length` images from `num_classes` random characters.

    Each position's character is uniform over the chosen ones; each character
    contributes distinct drawings (`with_replacement`: GMN's draw, below).

    Args:
        images: `[characters, drawings, H, W]` images.
        num_classes: characters in the sequence.
        length: images in the sequence (at most `drawings` of a character).
        rng: the draws' generator.
        with_replacement: draw as GMN's `utils.put_new_data` does: the
            characters with replacement, each position's character uniform
            over them and its drawing uniform over all the character's
            drawings, so an image can recur in the sequence.

    Returns:
        `(images [length, H, W, 1] float32, labels [length] int)`.
    """
    if with_replacement:
        chars = rng.choice(images.shape[0], size=num_classes, replace=True)
        which = chars[rng.integers(0, num_classes, size=length)]
        drawing = rng.integers(0, images.shape[1], size=length)
        return images[which, drawing].astype(np.float32)[..., None], which
    drawings, chars, which = per_class_draw(images, num_classes, length, rng)
    return drawings[which, _next_drawing(which, num_classes, 0)], chars[which]


def per_class_draw(
    images: np.ndarray, num_classes: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One `gmn_table_per_class` sequence: C characters, their drawings shuffled.

    Args:
        images: `[characters, drawings, H, W]` images.
        num_classes: characters C.
        length: images per sequence (memory and targets; at most `drawings`).

    Returns:
        `(drawings [C, drawings, H, W, 1] float32, characters [C] int,
        which [length] int)`: character `c`'s drawings in a random order, and
        each position's character (uniform over the C). `per_class_split`
        forms a (T, memory, targets) cell from them.
    """
    chars = rng.choice(images.shape[0], size=num_classes, replace=False)
    which = rng.integers(0, num_classes, size=length)
    perms = np.stack([rng.permutation(images.shape[1]) for _ in chars])
    drawings = images[chars[:, None], perms].astype(np.float32)[..., None]
    return drawings, chars, which


def per_class_split(
    drawings: np.ndarray, which: np.ndarray, shots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memory of T drawings of each character, and `len(which) - T` targets.

    Args:
        drawings: `[C, drawings, H, W, 1]` from `per_class_draw`.
        which: `[length]` characters of the positions (`per_class_draw`).
        shots: T, drawings of each character in memory.

    Returns:
        `(memory [C*T, H, W, 1], targets [length - T, H, W, 1], labels
        [length - T])`: memory holds drawings 0..T-1 of every character;
        target `i` is the next unused drawing (from T on) of character
        `which[T + i]` (its label, an index into the C characters), so no
        target is in memory or repeated.
    """
    num_classes, count = drawings.shape[:2]
    if not 0 < shots < len(which) <= count:
        raise ConfigError(
            f"gmn_table_per_class needs 0 < T < {len(which)} <= {count}; got T={shots}"
        )
    memory = drawings[:, :shots].reshape(-1, *drawings.shape[2:])
    labels = which[shots:]
    return memory, drawings[labels, _next_drawing(labels, num_classes, shots)], labels


def _next_drawing(which: np.ndarray, num_classes: int, start: int) -> np.ndarray:
    """Per position, its character's next unused drawing, counting from `start`.

    Args:
        which: `[n]` characters (indices into the C) of the positions.
        num_classes: characters C.
        start: the first drawing to use of every character.

    Returns:
        `[n]` int: `start` + the number of earlier positions of the same
        character.
    """
    used = np.zeros(num_classes, int)
    index = []
    for c in which:
        index.append(start + used[c])
        used[c] += 1
    return np.asarray(index, int)


def table_sequences(
    images: np.ndarray,
    classes: Sequence[int],
    per_row: int,
    seed: int,
    with_replacement: bool = False,
) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """`gmn_table`'s sequences: `per_row` of them for each C in `classes`.

    Rows are drawn in the order of `classes` from one generator seeded with
    `[seed, 1]` (`[seed, 3]` `with_replacement`, see `gmn_sequences`). So the
    first row's first sequences do not depend on `per_row` or on the rows
    after it, but a later row's sequences depend on the rows before it and
    their `per_row`: two evaluations score the same targets in a C > 1 cell
    only with the same `classes` (in order) and `per_row` (`--num_examples`).
    The reproduce rows use the default `classes` and 40 per row throughout,
    and `tools/gmn_absent_class.py` draws the same way. (One generator per
    row would lift this, at the price of new targets for every documented
    C > 1 cell.)

    Returns:
        `{C: [(images [20, H, W, 1], labels [20]), ...]}`.
    """
    rng = np.random.default_rng([seed, 3 if with_replacement else 1])
    return {
        n: [
            gmn_sequences(images, n, LENGTH, rng, with_replacement)
            for _ in range(per_row)
        ]
        for n in classes
    }


def copies_of_memory(memory: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Which targets equal an image in memory, pixel for pixel.

    Args:
        memory: `[M, ...]` images.
        targets: `[B, ...]` images.

    Returns:
        `[B]` bool.
    """
    same = memory.reshape(1, len(memory), -1) == targets.reshape(len(targets), 1, -1)
    return same.all(-1).any(-1)


def gmn_table(run: Run, options: GmnTableOptions | None = None, **keywords) -> Result:
    """Table 1 by GMN's protocol: images T+1..20 given the first T of a sequence.

    Each sequence holds 20 test images of C characters (`gmn_sequences`).

    Args:
        run: a restored episodic Omniglot VMA run (`load`).
        options: `GmnTableOptions` (default: the defaults).
        **keywords: `GmnTableOptions` fields, overriding `options`.

    Returns:
        `({"table": {"C=c,T=t": {metric: {"mean", "stderr"}, "num_examples"}},
        "classes", "shots", "split", "sequences_per_row", "num_samples"}, {})`;
        `with_replacement`, each cell also has `"copies"` and `"fresh"` (the
        bound of the targets that are / are not a copy of an image in memory,
        `bound_over`) and `"copy_fraction"`.

    Raises:
        ConfigError: an unknown option, a run of another kind, or a T >= 20.
    """
    o = GmnTableOptions.resolve(options, keywords)

    def cells(images, per_row):
        sequences = table_sequences(
            images, o.classes, per_row, o.seed, o.with_replacement
        )

        def batches(n, t):
            for seq, _ in sequences[n]:
                batch = {"x": seq[t:], "memory": seq[:t]}
                if o.with_replacement:
                    batch["is_copy"] = copies_of_memory(seq[:t], seq[t:])
                yield batch

        return {(n, t): batches(n, t) for n in o.classes for t in o.shots}

    return _table(run, o, cells)


@dataclasses.dataclass(frozen=True)
class GmnTablePerClassOptions(_TableOptions):
    """Options of `gmn_table_per_class` (those of both Table 1 protocols)."""

    protocol = "gmn_table_per_class"


def gmn_table_per_class(
    run: Run, options: GmnTablePerClassOptions | None = None, **keywords
) -> Result:
    """Table 1 with T drawings of each of the C characters in memory.

    Per sequence: C test characters, memory = T drawings of each (C·T
    entries), targets = 20 − T other drawings of them, each position's
    character uniform over the C (`per_class_draw`, `per_class_split`; the
    draws do not depend on T, so a row's cells share their characters, nor on
    the other rows: each row has its own generator, seeded `[seed, 2, C]`).

    Args:
        run: a restored episodic Omniglot VMA run (`load`).
        options: `GmnTablePerClassOptions` (default: the defaults).
        **keywords: its fields, overriding `options`.

    Returns:
        As `gmn_table`.

    Raises:
        ConfigError: an unknown option, a run of another kind, or a T >= 20.
    """
    o = GmnTablePerClassOptions.resolve(options, keywords)

    def cells(images, per_row):
        # One generator per row (not gmn_table's): a row's draws do not
        # depend on the other rows asked for, so `classes=(16,)` computes the
        # full table's C = 16 cells.
        draws = {}
        for n in o.classes:
            rng = np.random.default_rng([o.seed, 2, n])
            draws[n] = [per_class_draw(images, n, LENGTH, rng) for _ in range(per_row)]

        def batches(n, t):
            for drawings, _, which in draws[n]:
                memory, targets, _ = per_class_split(drawings, which, t)
                yield {"x": targets, "memory": memory}

        return {(n, t): batches(n, t) for n in o.classes for t in o.shots}

    return _table(run, o, cells)


def _table(run: Run, o: _TableOptions, cells) -> Result:
    """The (C, T) cells of `o`, each the bound over the batches `cells` gives.

    Args:
        run: the run (`load`).
        o: the resolved options.
        cells: `cells(images, sequences per row) -> {(C, T): batches}`, lazily
            drawn batches of `bound_over` from `images` `[chars, drawings, H, W]`
            (those of `o.split`).
    """
    from vma_tf import evaluation
    from vma_tf.data.experiments import episodic_splits

    c = run.config
    require(
        run,
        o.protocol,
        c.model.kind == "vma" and c.data.task == "episodes",
        "an episodic Omniglot VMA run",
    )
    if o.split not in SPLITS:
        raise ConfigError(
            f"{o.protocol} split={o.split!r} is unknown; choose one of "
            + ", ".join(SPLITS)
        )
    if not 1 <= min(o.shots) <= max(o.shots) < LENGTH:
        raise ConfigError(
            f"{o.protocol} shots={','.join(map(str, o.shots))}: each T (images "
            f"in memory) must be 1 to {LENGTH - 1}"
        )
    train, test = episodic_splits(c)
    images = {"test": test, "train": train}[o.split].images
    # Distinct characters per sequence, unless drawn with replacement.
    most = None if getattr(o, "with_replacement", False) else images.shape[0]
    if min(o.classes) < 1 or (most is not None and max(o.classes) > most):
        allowed = (
            ">= 1"
            if most is None
            else f"1 to {most} (the {o.split} split's characters)"
        )
        raise ConfigError(
            f"{o.protocol} classes={','.join(map(str, o.classes))}: each C "
            f"must be {allowed}"
        )
    stream = evaluation.StreamedBound(run.model, o.chunk_size, o.jit)
    per_row = o.num_examples or 10
    batches = cells(images, per_row)
    cache = CellCache(run, o)
    table = {
        f"C={n},T={t}": cache(
            f"C={n},T={t}",
            lambda b=batches[n, t]: bound_over(stream, b, o.num_samples, o.seed),
        )
        for n in o.classes
        for t in o.shots
    }
    cache.finish()
    return {
        "table": table,
        "classes": list(o.classes),
        "shots": list(o.shots),
        "split": o.split,
        "sequences_per_row": per_row,
        "num_samples": o.num_samples,
    }, {}
