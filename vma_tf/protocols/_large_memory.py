"""`large_memory`: MNIST recall model with a test-time memory of up to
130 000 images (default 100 000), targets drawn from it: L_K, kl_a, the
own-slot diagnostics, wall time and peak RSS (the Performance issue's scale
test)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from vma_tf.configs import ConfigError
from vma_tf.protocols.common import (
    BOUND_KEYS,
    BoundOptions,
    Result,
    Run,
    require,
    summary,
)


@dataclasses.dataclass(frozen=True)
class LargeMemoryOptions(BoundOptions):
    """Options of `large_memory`.

    Attributes:
        num_samples: K of the bound.
        num_examples: targets, distinct memory images drawn uniformly
            (0: 64).
        chunk_size: importance samples per chunk of the streamed bound.
        seed: evaluation seed (also draws the targets).
        jit: compile with XLA.
        memory_size: MNIST images in memory (`large_memory_images`).
        memory_chunk: memory rows per chunk of the per-entry state.
    """

    protocol = "large_memory"
    memory_size: int = 100_000
    memory_chunk: int = 10_000


def large_memory_images(size: int, data_dir=None) -> np.ndarray:
    """`[size, 784]` float32 0/1 MNIST images for a very large memory.

    The 70 000 binarized MNIST images (train, valid, test) first, then the
    MNIST training images (tfds `mnist`, IDX-file order) binarized at 0.5 (a
    different binarization of some of the same digits), up to 130 000 images.

    Args:
        size: number of images.
        data_dir: data directory (default: `$VMA_DATA_DIR`, then `./data`).

    Returns:
        The images, `[size, 784]` float32.

    Raises:
        ConfigError: more images than there are.
    """
    from vma_tf.data.mnist import load_binarized_mnist, load_mnist_train_images

    parts = [load_binarized_mnist(s, data_dir) for s in ("train", "valid", "test")]
    have = sum(len(p) for p in parts)
    if size > have:
        extra = load_mnist_train_images(data_dir) > 127
        if size > have + len(extra):
            raise ConfigError(
                f"--memory_size={size}: at most {have + len(extra)} MNIST images"
            )
        parts.append(extra[: size - have])
    out = np.empty([size, 784], np.float32)
    start = 0
    for part in parts:
        take = min(len(part), size - start)
        out[start : start + take] = part[:take]
        start += take
    return out


def large_memory(
    run: Run, options: LargeMemoryOptions | None = None, **keywords
) -> Result:
    """L_K with a memory of `memory_size` MNIST images (targets from memory).

    The per-entry state is computed in chunks of `memory_chunk` rows, q(a|x)
    is normalised exactly over all entries, and addresses are sampled in two
    exact stages (`sampling.categorical`), so RAM grows with |M| only through
    the per-entry state.

    Args:
        run: a restored MNIST VMA run with episodic memory (`load`).
        options: `LargeMemoryOptions` (default: the defaults).
        **keywords: `LargeMemoryOptions` fields, overriding `options`.

    Returns:
        `({metric: {"mean", "stderr"}, "memory_size", "log_memory_size",
        "num_examples", "num_samples", "wall_sec",
        "importance_samples_per_sec", "peak_rss_mb"}, {})`; metrics
        `nll_bound`, `kl_a`, `kl_z`, `recon`, `q_own_slot`, `mode_is_own_slot`.

    Raises:
        ConfigError: an unknown option, a run of another kind, more images
            than there are, or more targets than images.
    """
    o = LargeMemoryOptions.resolve(options, keywords)
    import tensorflow as tf

    from vma_tf.benchmark import peak_rss_bytes

    c = run.config
    require(
        run,
        "large_memory",
        c.model.kind == "vma"
        and c.data.dataset == "binarized_mnist"
        and c.model.memory == "episodic",
        "an MNIST VMA run with episodic memory (e.g. mnist_recall)",
    )
    t0 = time.perf_counter()
    images = large_memory_images(o.memory_size, c.data.data_dir)
    memory = tf.convert_to_tensor(images)
    n = o.num_examples or 64
    if n > o.memory_size:
        raise ConfigError(
            f"--num_examples={n} exceeds --memory_size={o.memory_size} (the "
            "targets are distinct memory images)"
        )
    index = np.random.default_rng(o.seed).choice(o.memory_size, size=n, replace=False)
    values, t_eval = _bound_and_own_slot(run, memory, index, o)
    wall = time.perf_counter() - t0
    return {
        **summary(values),
        "memory_size": o.memory_size,
        "log_memory_size": math.log(o.memory_size),
        "num_examples": n,
        "num_samples": o.num_samples,
        "wall_sec": wall,
        "importance_samples_per_sec": n
        * o.num_samples
        / (time.perf_counter() - t_eval),
        "peak_rss_mb": peak_rss_bytes() / 2**20,
    }, {}


def _bound_and_own_slot(run: Run, memory, index: np.ndarray, o: LargeMemoryOptions):
    """Per-target L_K diagnostics and own-slot recall of targets `index`.

    The own slot is the target's own row only. An exact copy of it elsewhere
    in memory (binarized MNIST has some: 41 of the first 100,000 training
    images are in groups of identical ones) gets the same logit, so a target
    whose copy comes first has its mode counted as missed and about half its
    q-mass. `recall_sizes` counts copies too (`own_slot_recall`); doing so
    here would compare every target with up to 10^6 entries (not done).

    Args:
        run: the run.
        memory: the memory images, `[M, 784]`.
        index: the targets' rows of `memory`, `[N]`.
        o: the options.

    Returns:
        `(values, t_eval)`: `{metric: [array [B_i], ...]}` for `BOUND_KEYS`,
        `q_own_slot` and `mode_is_own_slot`; `time.perf_counter()` after the
        per-entry state was computed.
    """
    import tensorflow as tf

    from vma_tf import evaluation

    stream = evaluation.StreamedBound(run.model, o.chunk_size, o.jit, o.memory_chunk)
    state = evaluation.memory_state_in_chunks(run.model, memory, o.memory_chunk)
    batch = run.config.train.batch_size
    values = {k: [] for k in (*BOUND_KEYS, "q_own_slot", "mode_is_own_slot")}
    t_eval = time.perf_counter()
    for i in range(0, len(index), batch):
        rows = index[i : i + batch]
        x = tf.gather(memory, rows)
        res = stream(x, memory, o.num_samples, seed=(o.seed, i), state=state)
        for k in BOUND_KEYS:
            values[k].append(res[k])
        q_a, _ = run.model.address_distributions(x, state=state)
        probs = q_a.probs_parameter().numpy()
        own = probs[np.arange(len(x)), rows].astype(np.float64)
        values["q_own_slot"].append(own)
        values["mode_is_own_slot"].append((probs.argmax(-1) == rows).astype(np.float64))
    return values, t_eval
