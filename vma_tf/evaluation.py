"""Evaluation with many importance samples, streamed in chunks.

`StreamedBound` computes the per-example K-sample bound L_K for K up to
thousands with memory bounded by the chunk size: samples are drawn in chunks
of `chunk_size` and their log-weights accumulated with a running logsumexp.
The per-memory-entry work (`model.memory_state`) and the per-(entry, target)
work (`model.pair_state`: q(z|x, m_a) for every entry and target when there
are fewer entries than samples) are done once for all chunks, and chunk
[k0, k0 + k) draws exactly the samples [k0, k0 + k) of one unchunked K-sample
draw (counter-based Philox, `sample_offset`), so the
chunked and unchunked bounds agree to float rounding.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from vma_tf.modeling.models import LatentVariableModel


def memory_state_in_chunks(model: LatentVariableModel, memory, rows: int = 0):
    """`model.memory_state(memory)` computed over chunks of `rows` entries.

    Every tensor of the state is per memory entry (`[|M|, ...]`), so the
    chunks' states concatenate to the state of the whole memory, while the
    networks' intermediate activations stay bounded by `rows` entries: a
    memory of 100 000 images is embedded without 100 000-row temporaries.

    Args:
        model: a built model.
        memory: `[|M|, *entry]` or None (learned memory).
        rows: entries per chunk (0: all at once).

    Returns:
        The state (None for models without memory).
    """
    if memory is None or not rows or int(memory.shape[0]) <= rows:
        return model.memory_state(memory)
    states = [
        model.memory_state(memory[i : i + rows])
        for i in range(0, int(memory.shape[0]), rows)
    ]
    if states[0] is None:
        return None
    skeleton = tf.nest.map_structure(lambda _: 0, states[0])
    # One field at a time, dropping its chunks as soon as they are joined:
    # the transient copy is one field, not the whole state.
    fields = [tf.nest.flatten(s) for s in states]
    del states
    joined = []
    for i in range(len(fields[0])):
        joined.append(tf.concat([f[i] for f in fields], 0))
        for f in fields:
            f[i] = None
    return tf.nest.pack_sequence_as(skeleton, joined)


def _signature(value):
    """Hashable trace key of one argument leaf: shape and dtype of a tensor
    or array, the value itself otherwise (Python numbers, None)."""
    if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray)):
        return (tuple(value.shape), value.dtype.name)
    return (type(value).__name__, value)


class TracedPerSignature:
    """`fn` as one `tf.function` per call signature (shapes, dtypes and
    Python values of the arguments), each traced exactly once.

    The streamed bound is compiled once per input shape anyway (XLA needs
    static shapes). Protocols that vary the memory size (`robustness`: 13
    memory/target shapes) retrace on nearly every call, and TensorFlow warns
    of "frequent retracing", a warning meant for accidental retracing, which
    it counts per Python function (its code object). Each signature's
    Function wraps its own `functools.partial` of `fn`, so the count is per
    signature: the same compilations, no warning.

    Args:
        fn: the Python function.
        jit: compile with XLA.
    """

    def __init__(self, fn, jit: bool):
        self._fn = fn
        self._jit = jit
        self._functions = {}

    def _function(self, args):
        key = tuple(
            _signature(v) for v in tf.nest.flatten(args, expand_composites=True)
        )
        function = self._functions.get(key)
        if function is None:
            function = tf.function(functools.partial(self._fn), jit_compile=self._jit)
            self._functions[key] = function
        return function

    def __call__(self, *args):
        return self._function(args)(*args)

    def get_concrete_function(self, *args):
        """The traced graph function of `args`' signature."""
        return self._function(args).get_concrete_function(*args)

    @property
    def traces(self) -> int:
        """Traces so far, over all signatures."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())


class StreamedBound:
    """Per-example K-sample bound and diagnostics, K streamed in chunks.

    Args:
        model: a built `LatentVariableModel`.
        chunk_size: samples per chunk (bounds memory; >= 1).
        jit: compile the chunk with XLA.
        memory_chunk: compute the per-entry state over chunks of this many
            memory rows (0: at once); see `memory_state_in_chunks`.
    """

    def __init__(
        self,
        model: LatentVariableModel,
        chunk_size: int = 100,
        jit: bool = True,
        memory_chunk: int = 0,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        self.model = model
        self.chunk_size = chunk_size
        self.memory_chunk = memory_chunk
        self._chunk = TracedPerSignature(self._chunk_terms, jit)
        self._pairs = TracedPerSignature(self.model.pair_state, jit)

    def _chunk_terms(self, x, memory, state, seed, offset, num, pairs=None):
        extra = {} if pairs is None else {"pairs": pairs}
        terms = self.model.compute_terms(
            x, memory, num, seed, state=state, sample_offset=offset, **extra
        )
        k = tf.cast(num, terms.log_weights.dtype)
        return (
            tf.reduce_logsumexp(terms.log_weights, axis=0),
            terms.kl_a,
            terms.kl_z * k,
            terms.recon * k,
        )

    def __call__(
        self, x, memory=None, num_samples: int = 1000, seed=(0, 0), state=None
    ):
        """Evaluates `x` `[B, *x]` against `memory` with K = `num_samples`.

        `state`: the per-entry state of `memory` computed before (e.g. by
        `memory_state_in_chunks`), reused instead of recomputed.

        Returns:
            Dict of float64 `[B]` arrays: `nll_bound` (-L_K), `kl_a`, `kl_z`
            and `recon` (the last two averaged over the K samples).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        x = tf.cast(x, self.model.head_dtype)
        if memory is not None:
            memory = tf.cast(memory, self.model.compute_dtype)
        if state is None:
            state = memory_state_in_chunks(self.model, memory, self.memory_chunk)
        # The per-(entry, target) work, once for all chunks (None: the model
        # has none, or more entries than samples).
        pairs = None
        if state is not None:
            pairs = self._pairs(x, state, num_samples, self.chunk_size)
        seed = tf.constant(seed, tf.int32)
        log_sum, kl_a, kl_z, recon = None, None, 0.0, 0.0
        for start in range(0, num_samples, self.chunk_size):
            num = min(self.chunk_size, num_samples - start)
            lse, kl_a, kl_z_sum, recon_sum = self._chunk(
                x, memory, state, seed, tf.constant(start, tf.int64), num, pairs
            )
            lse = lse.numpy().astype(np.float64)
            log_sum = lse if log_sum is None else np.logaddexp(log_sum, lse)
            kl_z = kl_z + kl_z_sum.numpy().astype(np.float64)
            recon = recon + recon_sum.numpy().astype(np.float64)
        bound = log_sum - math.log(num_samples)
        return {
            "nll_bound": -bound,
            "kl_a": kl_a.numpy().astype(np.float64),
            "kl_z": kl_z / num_samples,
            "recon": recon / num_samples,
        }


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-d array."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def clustered_stderr(groups: list[np.ndarray]) -> float:
    """Standard error of the pooled mean when values within a group correlate.

    The cluster-robust (sandwich) estimate: `sqrt(G / (G - 1) * sum_g (sum_{i
    in g} (y_i - ybar))^2) / N` over G groups and N values. The targets of a
    Table 1 sequence or a robustness episode share one memory and its
    characters, so they are not independent; the per-value standard error of
    `mean_and_stderr` then understates the mean's spread from draw to draw.
    With one value per group it equals `mean_and_stderr`'s.

    Args:
        groups: `G` 1-d arrays (each group's values).

    Returns:
        The standard error (NaN for fewer than two groups).
    """
    groups = [np.asarray(g, np.float64).ravel() for g in groups]
    if len(groups) < 2:
        return float("nan")
    pooled = np.concatenate(groups)
    mean = pooled.mean()
    sums = np.array([(g - mean).sum() for g in groups])
    g = len(groups)
    return float(math.sqrt(g / (g - 1) * (sums**2).sum()) / pooled.size)


def nll_protocol(
    model,
    evals,
    num_samples: int,
    num_examples: int = 0,
    chunk_size: int = 100,
    seed: int = 0,
    jit: bool = True,
    cache=None,
) -> dict:
    """Test bound L_K (K up to thousands, streamed) on each evaluation split.

    Batch `i` of a split is drawn with seed `(seed, i)`, so its values do not
    depend on the batches before it: with `cache` (e.g.
    `protocols.common.CellCache`) an interrupted evaluation resumes at the
    first batch it had not finished, to the numbers of an uninterrupted one.

    Args:
        model: a restored model.
        evals: `split -> dataset` of batches `{"x", "memory"?}` (the run's
            final evaluation sets: the same memory construction as training).
        num_samples: K.
        num_examples: stop after this many examples per split (0: all).
        chunk_size: samples per chunk.
        seed: evaluation seed.
        jit: compile with XLA.
        cache: `cache(name, compute) -> dict`, returning the saved per-example
            values of batch `name` (`"<split>/<i>"`) or `compute()`'s, saved;
            `None` computes every batch.

    Returns:
        `{split: {metric: {"mean", "stderr"}, "num_examples", "num_samples"}}`
        for metrics `nll_bound`, `kl_a`, `kl_z`, `recon` ("stderr" over
        targets) and `nll_bound_by_batch` (the bound's standard error over
        batches, `clustered_stderr`: the targets of an episode share its
        memory and characters, so they are not independent and the
        per-target figure understates the spread).
    """
    stream = StreamedBound(model, chunk_size, jit)
    metrics = ("nll_bound", "kl_a", "kl_z", "recon")

    def per_example(batch, i, take):  # JSON-ready: the cache's round trip.
        res = stream(batch["x"], batch.get("memory"), num_samples, seed=(seed, i))
        return {k: np.asarray(res[k][:take], np.float64).tolist() for k in metrics}

    if cache is None:
        cache = lambda name, compute: compute()
    out = {}
    for split, ds in evals.items():
        values = {k: [] for k in metrics}
        seen = 0
        for i, batch in enumerate(ds):
            take = int(tf.shape(batch["x"])[0])
            if num_examples:
                take = min(take, num_examples - seen)
            res = cache(
                f"{split}/{i}",
                lambda batch=batch, i=i, take=take: per_example(batch, i, take),
            )
            for k, value in values.items():
                value.append(np.asarray(res[k], np.float64))
            seen += take
            if num_examples and seen >= num_examples:
                break
        summary = {}
        for k, v in values.items():
            mean, se = mean_and_stderr(np.concatenate(v))
            summary[k] = {"mean": mean, "stderr": se}
        # An episode's targets share its memory and characters.
        summary["nll_bound_by_batch"] = {
            "mean": summary["nll_bound"]["mean"],
            "stderr": clustered_stderr(values["nll_bound"]),
        }
        out[split] = {**summary, "num_examples": seen, "num_samples": num_samples}
    return out
