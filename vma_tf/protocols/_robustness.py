"""`robustness`: Fig. 5.

A: C characters in memory (targets from up to 8 of them, the rest
confounders), with the reference L(C=1) + log C of an optimal model of C
disjoint classes (so C = 1 is always among A's points); B: all test
characters in memory, 1...16 examples each.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from vma_tf.configs import ConfigError
from vma_tf.protocols.common import (
    ROBUST_STREAM,
    BoundOptions,
    CellCache,
    Result,
    Run,
    bound_over,
    require,
)


@dataclasses.dataclass(frozen=True)
class RobustnessOptions(BoundOptions):
    """Options of `robustness`.

    Attributes:
        num_samples: K of the bound.
        num_examples: targets per point (0: 64), in batches of up to 8
            characters x `targets_per_class`.
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed.
        jit: compile with XLA.
        classes: A's numbers of characters in memory: 1 (the reference's
            anchor) and others up to the test characters.
        examples: B's examples per character in memory.
        targets_per_class: targets per target character (fewer at A's
            points if the run's memory_per_class leaves fewer of a
            character's 20 drawings; B's points that leave fewer are
            dropped).
    """

    protocol = "robustness"
    classes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 144)
    examples: Sequence[int] = (1, 2, 4, 8, 16)
    targets_per_class: int = 4


def robustness(
    run: Run, options: RobustnessOptions | None = None, **keywords
) -> Result:
    """Fig. 5 A (C characters in memory) and B (all, 1..16 examples each).

    A's points have the run's memory_per_class examples of each character in
    memory; the reference L(1) + log C is anchored on A's C = 1 point, which
    `classes` must therefore include.

    Args:
        run: a restored episodic Omniglot memory run (VMA or soft attention).
        options: `RobustnessOptions` (default: the defaults).
        **keywords: `RobustnessOptions` fields, overriding `options`.

    Returns:
        `({"A_classes": {str(C): point, ...}, "B_examples_per_class":
        {str(k): point, ...}, "num_samples"}, {"robustness": figure})`; a
        point is `{metric: {"mean", "stderr"}, "num_examples", "classes",
        "memory_per_class"}`, A's also with `"optimal_reference"`.

    Raises:
        ConfigError: an unknown option, a run of another kind, or `classes`
            without 1 or with more than the test characters.
    """
    o = RobustnessOptions.resolve(options, keywords)
    from vma_tf import evaluation
    from vma_tf.data.experiments import episodes, episodic_splits
    from vma_tf.data.pipelines import from_counter

    c = run.config
    require(
        run,
        "robustness",
        c.model.kind in ("vma", "soft_attention") and c.data.task == "episodes",
        "an episodic Omniglot memory run",
    )
    _, test = episodic_splits(c)
    total = test.num_characters
    listed = ",".join(str(n) for n in o.classes)
    if 1 not in o.classes:
        raise ConfigError(
            f"--classes={listed} must include 1: robustness's reference "
            "L(1) + log C is anchored on C = 1"
        )
    if max(o.classes) > total or min(o.classes) < 1:
        raise ConfigError(
            f"--classes={listed}: robustness takes 1 to {total} characters in "
            f"memory (the test characters of {c.data.dataset})"
        )
    classes = list(dict.fromkeys(o.classes))
    stream = evaluation.StreamedBound(run.model, o.chunk_size, o.jit)
    wanted = o.num_examples or 64
    drawings = test.images.shape[1]

    def point(num_classes, per_class):
        targets = min(num_classes, c.data.batch_classes)
        # A run trained with memory_per_class > 20 - targets_per_class leaves
        # fewer drawings of a character to be targets.
        per_target = min(o.targets_per_class, drawings - per_class)
        make = episodes(
            c,
            test,
            ROBUST_STREAM,
            seed=c.data.eval_seed,
            batch_classes=targets,
            targets_per_class=per_target,
            memory_per_class=per_class,
            confounder_classes=num_classes - targets,
        )
        batches = max(1, math.ceil(wanted / (targets * per_target)))
        r = bound_over(stream, from_counter(make, 0, batches), o.num_samples, o.seed)
        return {**r, "classes": num_classes, "memory_per_class": per_class}

    cells = CellCache(run, o)  # A rerun resumes at the first missing point.
    per_class = c.data.memory_per_class
    a = {str(n): cells(f"A{n}", lambda n=n: point(n, per_class)) for n in classes}
    base = a["1"]["nll_bound"]["mean"]  # L(C = 1).
    for n in classes:
        a[str(n)]["optimal_reference"] = base + math.log(n)
    # B's point at the run's own memory_per_class is A's at C = total (the
    # same call): taken from A, not computed twice.
    b = {
        str(k): (
            _without(a[str(total)], "optimal_reference")
            if k == per_class and str(total) in a
            else cells(f"B{k}", lambda k=k: point(total, k))
        )
        for k in o.examples
        if k + o.targets_per_class <= drawings
    }
    cells.finish()
    results = {
        "A_classes": a,
        "B_examples_per_class": b,
        "num_samples": o.num_samples,
    }

    def figure(path):
        from vma_tf import plotting

        plotting.robustness_figure(path, results)

    return results, {"robustness": figure}


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}
