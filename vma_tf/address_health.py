"""Address health: how q(a|x) uses the memory, and when the address collapses.

Statistics of the posterior probabilities q(a|x) of a set of targets over one
memory (`address_statistics`), accumulated over evaluation batches
(`AddressHealth`): with learned memory every batch reads the same memory and
the statistics are taken over all targets at once; with episodic memory each
batch has its own memory and the per-batch statistics are averaged.

Every quantity is in nats:

* `H_q`: the mean entropy of q(a|x) over targets x;
* `H_mean_q`: the entropy of the marginal q̄(a) = E_x q(a|x);
* `I_xa`: `H_mean_q - H_q`, the mutual information between the target and
  the address under q (over the empirical targets; at most log of their
  number);
* `slots_as_mode`: the number of slots that are the mode of q(a|x) for some
  target, and `top_slot_share` the fraction of targets whose mode is the most
  frequent one;
* `q_own`: (episodic memory) the mean q-mass on the target's own slot (recall,
  where the target is a memory entry) or on the entries of its class
  (few-shot episodes).

An address has collapsed (`collapsed`) when it carries almost no information
about the target (`I_xa < COLLAPSE_MIN_INFORMATION`) or one slot is the mode
for more than `COLLAPSE_MAX_TOP_SHARE` of the targets.
"""

from __future__ import annotations

import weakref

import numpy as np

COLLAPSE_MIN_INFORMATION = 0.05
COLLAPSE_MAX_TOP_SHARE = 0.9
HEALTH_NAMES = ("H_q", "H_mean_q", "I_xa", "slots_as_mode", "top_slot_share")
# Everything `measure` may report (metrics.jsonl / TensorBoard keys).
HEALTH_KEYS = (*HEALTH_NAMES, "memory_size", "q_own")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis (0 log 0 = 0)."""
    p = np.asarray(probs, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def address_statistics(q: np.ndarray, own: np.ndarray | None = None) -> dict:
    """Address statistics of one memory.

    Args:
        q: `[N, |M|]` probabilities q(a|x) of N targets.
        own: optional `[N, |M|]` 0/1 mask of each target's own entries (its
            slot in recall, its class in few-shot episodes).

    Returns:
        dict with the `HEALTH_NAMES`, `memory_size` (|M|) and `q_own` if
        `own` is given.
    """
    q = np.asarray(q, np.float64)
    if q.ndim != 2 or q.shape[0] < 1:
        raise ValueError(f"q must be [N >= 1, |M|]; got shape {q.shape}")
    h_q = float(entropy(q).mean())
    h_mean = float(entropy(q.mean(0)))
    counts = np.bincount(q.argmax(-1), minlength=q.shape[-1])
    out = {
        "H_q": h_q,
        "H_mean_q": h_mean,
        "I_xa": h_mean - h_q,
        "slots_as_mode": float((counts > 0).sum()),
        "top_slot_share": float(counts.max() / counts.sum()),
        "memory_size": float(q.shape[-1]),
    }
    if own is not None:
        out["q_own"] = float(np.sum(q * own, -1).mean())
    return out


class AddressHealth:
    """Accumulates `address_statistics` over evaluation batches.

    Args:
        shared_memory: True if every batch reads the same memory (learned
            memory): the statistics are then taken over all targets at once.
            False (episodic memory): per batch, then averaged.
    """

    def __init__(self, shared_memory: bool):
        self.shared_memory = shared_memory
        self._q, self._own, self._per_batch = [], [], []

    def update(self, q: np.ndarray, own: np.ndarray | None = None) -> None:
        """Adds one batch: `q` `[B, |M|]`, `own` `[B, |M|]` mask or None."""
        if self.shared_memory:
            self._q.append(np.asarray(q, np.float64))
            if own is not None:
                self._own.append(own)
        else:
            self._per_batch.append(address_statistics(q, own))

    def result(self) -> dict:
        """The statistics (empty if no batch was added)."""
        if self.shared_memory:
            if not self._q:
                return {}
            own = np.concatenate(self._own) if self._own else None
            return address_statistics(np.concatenate(self._q), own)
        if not self._per_batch:
            return {}
        return {
            k: float(np.mean([b[k] for b in self._per_batch]))
            for k in self._per_batch[0]
        }


def collapsed(stats: dict) -> bool:
    """Whether `stats` (from `address_statistics`) show a collapsed address."""
    return (
        stats["I_xa"] < COLLAPSE_MIN_INFORMATION
        or stats["top_slot_share"] > COLLAPSE_MAX_TOP_SHARE
    )


def own_mask(batch: dict, memory_size: int) -> np.ndarray | None:
    """`[B, |M|]` mask of each target's own entries from a batch's labels:
    `"target_slot"` (recall: the target's slot) or `"x_label"` and
    `"memory_label"` (episodes: the entries of the target's class); None if
    the batch has neither."""
    if "target_slot" in batch:
        slots = np.asarray(batch["target_slot"])
        return (slots[:, None] == np.arange(memory_size)[None]).astype(np.float64)
    if "x_label" in batch and "memory_label" in batch:
        x_label = np.asarray(batch["x_label"])
        return (x_label[:, None] == np.asarray(batch["memory_label"])[None]).astype(
            np.float64
        )
    return None


def measure(model, dataset) -> dict:
    """Address statistics of `model` (a VMA) over the batches of `dataset`.

    The per-entry addressing state (`model.address_state`) of a learned
    memory is computed once for all batches, and q(a|x) runs as a graph,
    traced once per model and batch signature (training measures every
    evaluation split at every evaluation: the same traces each time).

    Args:
        model: a VMA (`address_state(memory)`, `address_distributions(x,
            state=...)`).
        dataset: batches `{"x", ["memory"], [labels]}` (see `own_mask`).

    Returns:
        `AddressHealth.result()`; empty for an empty dataset.
    """
    q_probs = _q_probs_function(model)
    health, shared = None, None
    for batch in dataset:
        memory = batch.get("memory")
        if health is None:
            health = AddressHealth(shared_memory=memory is None)
            if memory is None:
                shared = model.address_state(None)
        q = q_probs(batch["x"], memory, shared).numpy()
        health.update(q, own_mask(batch, q.shape[-1]))
    return {} if health is None else health.result()


_Q_PROBS = weakref.WeakKeyDictionary()


def _q_probs_function(model):
    """`q_probs(x, memory, state) -> [B, |M|]` of `model`, one per model.

    Episodic memory (`memory` given) computes the state in the graph; a
    learned memory (`memory` None) takes it as an argument, so the weights
    of a training model are read at each call, not frozen in a trace."""
    from vma_tf.evaluation import TracedPerSignature

    function = _Q_PROBS.get(model)
    if function is None:
        owner = weakref.ref(model)  # The cache must not keep the model alive.

        def q_probs(x, memory, state):
            vma = owner()
            if memory is not None:
                state = vma.address_state(memory)
            q_a, _ = vma.address_distributions(x, state=state)
            return q_a.probs_parameter()

        function = _Q_PROBS[model] = TracedPerSignature(q_probs, jit=False)
    return function


def collapse_warning(split: str, step: int, stats: dict) -> str:
    """The one-line warning printed when `collapsed(stats)`."""
    return (
        f"WARNING: address collapse at step {step} ({split}): "
        f"I(x;a) = {stats['I_xa']:.3f} nats, the top slot is the mode of "
        f"{100 * stats['top_slot_share']:.0f}% of targets, "
        f"{int(stats['slots_as_mode'])} slots used as a mode"
    )
