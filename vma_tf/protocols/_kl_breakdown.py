"""`kl_breakdown`: Fig. 4B, kl_a, kl_z and NLL of several runs (e.g. trained
with 1, 4, 8 examples per class)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vma_tf.protocols.common import BoundOptions, CellCache, Result, Run


@dataclasses.dataclass(frozen=True)
class KlBreakdownOptions(BoundOptions):
    """Options of `kl_breakdown` (each run is evaluated as by `nll`).

    Attributes:
        num_samples: K of the bound.
        num_examples: examples per evaluation split (0: all of them).
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed.
        jit: compile with XLA.
    """

    protocol = "kl_breakdown"
    several_runs = True


def kl_breakdown(
    runs: Sequence[Run], options: KlBreakdownOptions | None = None, **keywords
) -> Result:
    """Fig. 4B: kl_a, kl_z and NLL of each run on its own test episodes.

    Resumable: each run's finished batches are kept in
    `<its workdir>/eval/.kl_breakdown.cells.json` (`CellCache`) until every
    run is done, so an interrupted evaluation continues where it stopped.

    Args:
        runs: restored runs (`load`).
        options: `KlBreakdownOptions` (default: the defaults).
        **keywords: `KlBreakdownOptions` fields, overriding `options`.

    Returns:
        `({"runs": {workdir: {metric: {"mean", "stderr"}, "num_examples",
        "num_samples", "memory_per_class", "step"}}, "num_samples"},
        {"kl_breakdown": figure})`; each run's numbers are those of `nll` on
        its `test` split (else its first split).

    Raises:
        ConfigError: an unknown option.
    """
    o = KlBreakdownOptions.resolve(options, keywords)
    from vma_tf import evaluation

    out = {}
    caches = []
    for run in runs:
        # Each run's finished batches stay in its workdir until every run is
        # done (as `nll`), so an interrupted evaluation resumes.
        caches.append(CellCache(run, o))
        res = evaluation.nll_protocol(
            run.model,
            run.data.final_evals,
            o.num_samples,
            o.num_examples,
            o.chunk_size,
            o.seed,
            o.jit,
            cache=caches[-1],
        )
        split = res["test"] if "test" in res else next(iter(res.values()))
        out[str(run.workdir)] = {
            **split,
            "memory_per_class": run.config.data.memory_per_class,
            "step": run.step,
        }

    for cache in caches:
        cache.finish()

    def figure(path):
        from vma_tf import plotting

        plotting.kl_breakdown_figure(path, out)

    return {"runs": out, "num_samples": o.num_samples}, {"kl_breakdown": figure}
