"""`nll`: L_K (K up to thousands) on the run's final evaluation sets."""

from __future__ import annotations

import dataclasses

from vma_tf.protocols.common import BoundOptions, CellCache, Result, Run


@dataclasses.dataclass(frozen=True)
class NllOptions(BoundOptions):
    """Options of `nll`.

    Attributes:
        num_samples: K of the bound.
        num_examples: examples per evaluation split (0: all of them).
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed.
        jit: compile with XLA.
    """

    protocol = "nll"


def nll(run: Run, options: NllOptions | None = None, **keywords) -> Result:
    """L_K and its diagnostics on the run's final evaluation sets.

    Resumable: each finished batch is kept in `<workdir>/eval/.nll.cells.json`
    (`CellCache`) until the result is complete, so an interrupted evaluation
    (hours for K = 5000 on the full test set) continues where it stopped.

    Args:
        run: a restored run (`load`).
        options: `NllOptions` (default: the defaults).
        **keywords: `NllOptions` fields, overriding `options`.

    Returns:
        `({split: {metric: {"mean", "stderr"}, "num_examples", "num_samples"}},
        {})`; metrics `nll_bound`, `kl_a`, `kl_z`, `recon` and
        `nll_bound_by_batch` (`evaluation.nll_protocol`).

    Raises:
        ConfigError: an unknown option.
    """
    o = NllOptions.resolve(options, keywords)
    from vma_tf import evaluation

    cells = CellCache(run, o)  # A rerun resumes at the first missing batch.
    results = evaluation.nll_protocol(
        run.model,
        run.data.final_evals,
        o.num_samples,
        o.num_examples,
        o.chunk_size,
        o.seed,
        o.jit,
        cache=cells,
    )
    cells.finish()
    return results, {}
