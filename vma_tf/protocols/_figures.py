"""`figures`: learning curves, samples per memory entry (Fig. 2B, 4A) and
q(a|x) histograms with the top-5 entries (Fig. 3)."""

from __future__ import annotations

import dataclasses

import numpy as np

from vma_tf.errors import WorkdirError
from vma_tf.protocols.common import (
    Figures,
    Options,
    Result,
    Run,
    sample_grid,
    samples_title,
)
from vma_tf.time_to_quality import MetricsError, read_metrics


@dataclasses.dataclass(frozen=True)
class FiguresOptions(Options):
    """Options of `figures`.

    Attributes:
        seed: seed of the samples.
    """

    protocol = "figures"
    seed: int = 0


def _image_hw(run: Run) -> tuple[int, int]:
    """`(H, W)` of the run's images (MNIST vectors are 28 x 28)."""
    shape = run.data.x_shape
    return (28, 28) if len(shape) == 1 else tuple(shape[:2])


def figures(run: Run, options: FiguresOptions | None = None, **keywords) -> Result:
    """Learning curves, samples and q(a|x) histograms, whichever apply.

    Learning curves (`metrics.jsonl`, when the run has one; a cut-short last
    line is left out) and samples (titled as training titles them) for every
    run; for VMA runs also q(a|x) histograms with the top-5 entries (when
    memory entries are images) and, with episodic memory, samples next to
    their memory entry.

    Args:
        run: a restored run (`load`).
        options: `FiguresOptions` (default: the defaults).
        **keywords: `FiguresOptions` fields, overriding `options`.

    Returns:
        `({"records": number of metrics records}, {name: figure})` with names
        [`learning_curves`] (not without a `metrics.jsonl`: 0 records),
        `samples`, [`address_histograms`], [`entry_samples`].

    Raises:
        ConfigError: an unknown option.
        WorkdirError: a line of `metrics.jsonl` before its last is not a JSON
            object.
    """
    o = FiguresOptions.resolve(options, keywords)
    from vma_tf import plotting
    from vma_tf.modeling.models import VMA

    figs = {}
    metrics = run.workdir / "metrics.jsonl"
    records = []
    if metrics.is_file():
        try:
            records = read_metrics(metrics)
        except MetricsError as e:
            raise WorkdirError(str(e)) from None
        m = run.config.model
        memory_size = m.memory_size if m.kind == "vma" else None
        figs["learning_curves"] = lambda path: plotting.learning_curves(
            path, records, memory_size
        )
    hw = _image_hw(run)
    model = run.model
    memory = run.data.sample_memory
    title = samples_title(run.config.name, model, memory)
    figs["samples"] = lambda path: plotting.save_grid(
        path, sample_grid(model, memory, 8, 9, o.seed, hw), title
    )
    if isinstance(model, VMA):
        figs.update(_vma_figures(run, hw, o.seed))
    return {"records": len(records)}, figs


def _vma_figures(run: Run, hw: tuple[int, int], seed: int) -> Figures:
    """q(a|x) histograms and samples of memory entries, on a test batch."""
    import tensorflow as tf

    from vma_tf import plotting

    figs = {}
    model = run.model
    batch = next(iter(next(iter(run.data.final_evals.values()))))
    x, mem = batch["x"][:6], batch.get("memory")
    images_memory = mem if mem is not None else model.memory(None)
    if int(np.prod(images_memory.shape[1:])) == hw[0] * hw[1]:
        q_a, _ = model.address_distributions(x, mem)
        figs["address_histograms"] = lambda path: plotting.address_histograms(
            path,
            np.reshape(x.numpy(), [-1, *hw]),
            np.reshape(np.asarray(images_memory), [-1, *hw]),
            q_a.probs_parameter().numpy(),
        )
    if mem is not None:  # One-shot samples next to their memory entry.
        rows = min(8, int(mem.shape[0]))
        addr = tf.repeat(tf.range(rows), 8)
        samples = model.sample(addr, mem, seed=tf.constant([seed, 4]))
        samples = np.reshape(samples.numpy(), [rows, 8, *hw])
        entries = np.reshape(mem.numpy()[:rows], [rows, *hw])
        figs["entry_samples"] = lambda path: plotting.entry_samples(
            path, entries, samples, "memory entry | samples of p(x|m_a)"
        )
    return figs
