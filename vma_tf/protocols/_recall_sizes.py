"""`recall_sizes`: MNIST recall model, memory of 256...2048 test images,
targets drawn from memory; NLL and kl_a against log|M|."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from vma_tf.protocols.common import (
    RECALL_STREAM,
    BoundOptions,
    Result,
    Run,
    bound_over,
    require,
    summary,
)


@dataclasses.dataclass(frozen=True)
class RecallSizesOptions(BoundOptions):
    """Options of `recall_sizes`.

    Attributes:
        num_samples: K of the bound.
        num_examples: targets per memory size (0: 320), in whole batches of
            the run's batch size.
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed.
        jit: compile with XLA.
        sizes: the memory sizes |M| (test images in memory).
    """

    protocol = "recall_sizes"
    sizes: Sequence[int] = (256, 512, 1024, 2048)


def recall_sizes(
    run: Run, options: RecallSizesOptions | None = None, **keywords
) -> Result:
    """NLL and kl_a with test-time memories of `sizes` test images.

    Targets are drawn from the memory (the training task). Also reports
    `q_own_slot`, the q(a|x) mass on the target's own slot, and
    `mode_is_own_slot`, the fraction of targets whose most probable address is
    their own slot (`classification.own_slot_recall`): lookup means both
    approach 1.

    Args:
        run: a restored MNIST recall VMA run (`load`).
        options: `RecallSizesOptions` (default: the defaults).
        **keywords: `RecallSizesOptions` fields, overriding `options`.

    Returns:
        `({"by_memory_size": {str(size): {metric: {"mean", "stderr"},
        "num_examples", "log_memory_size"}}, "num_samples"},
        {"recall_sizes": figure})`; metrics `nll_bound`, `kl_a`, `kl_z`,
        `recon`, `q_own_slot`, `mode_is_own_slot`.

    Raises:
        ConfigError: an unknown option, or not an MNIST recall VMA run.
    """
    o = RecallSizesOptions.resolve(options, keywords)
    import tensorflow as tf

    from vma_tf import classification, evaluation
    from vma_tf.data.mnist import load_binarized_mnist
    from vma_tf.data.pipelines import from_counter, recall_batch_fn

    c = run.config
    require(
        run,
        "recall_sizes",
        c.model.kind == "vma" and c.data.task == "recall",
        "an MNIST recall VMA run",
    )
    test = tf.constant(load_binarized_mnist("test", c.data.data_dir))
    batch = c.train.batch_size
    batches = max(1, math.ceil((o.num_examples or 320) / batch))
    stream = evaluation.StreamedBound(run.model, o.chunk_size, o.jit)
    results = {}
    for size in o.sizes:
        make = recall_batch_fn(test, size, batch, c.data.eval_seed, RECALL_STREAM)
        r = bound_over(stream, from_counter(make, 0, batches), o.num_samples, o.seed)
        own = {"q_own_slot": [], "mode_is_own_slot": []}
        for targets in from_counter(make, 0, batches):
            mass, hit = classification.own_slot_recall(
                run.model, targets["x"], targets["memory"]
            )
            own["q_own_slot"].append(mass.numpy())
            own["mode_is_own_slot"].append(hit.numpy().astype(np.float64))
        results[str(size)] = {
            **r,
            **summary(own),
            "log_memory_size": math.log(size),
        }

    def figure(path):
        from vma_tf import plotting

        plotting.recall_sizes_figure(path, results)

    return {"by_memory_size": results, "num_samples": o.num_samples}, {
        "recall_sizes": figure
    }
