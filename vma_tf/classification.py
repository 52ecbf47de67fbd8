"""Few-shot classification with a trained memory model (paper section 4.2).

Two estimates of p(c|x) for memory entries labelled by class:

* feed-forward: p(c|x) ≈ Σ_{a: label(a) = c} q(a|x) (`address_class_probs`);
* importance-weighted: p(c|x) ≈ Σ_{a: label(a) = c} p(x, a) / Σ_a p(x, a) with
  p(x, a) = p(a) E_{q(z|x, m_a)}[p(x|z, m_a) p(z|m_a) / q(z|x, m_a)] estimated
  with S samples of z per entry, every entry enumerated
  (`importance_class_probs`).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def address_class_probs(model, x, memory, memory_labels, num_classes: int):
    """p(c|x) = Σ_{a in class c} q(a|x).

    Args:
        model: a `VMA`.
        x: `[B, *x]` queries.
        memory: `[|M|, *x]` labelled entries.
        memory_labels: int `[|M|]` in `[0, num_classes)`.
        num_classes: N.

    Returns:
        float `[B, N]` class probabilities (rows sum to 1).
    """
    q_a, _ = model.address_distributions(x, memory)
    probs = q_a.probs_parameter()  # The head's dtype: float32 at any policy.
    return tf.matmul(probs, tf.one_hot(memory_labels, num_classes, dtype=probs.dtype))


def episode_labels(memory_label, x_label) -> tuple[np.ndarray, np.ndarray]:
    """An episode's class labels in `[0, N)`, from its character labels.

    Class i is the i-th distinct character among the targets, so the labels
    do not depend on how the episode orders its rows.

    Args:
        memory_label: int `[|M|]` character of each memory entry; each is
            the character of some target.
        x_label: int `[B]` character of each target.

    Returns:
        int32 `([|M|], [B])` class of each memory entry and of each target.

    Raises:
        ValueError: a memory entry of a character no target has.
    """
    x_label, memory_label = np.asarray(x_label), np.asarray(memory_label)
    place = {c: i for i, c in enumerate(dict.fromkeys(x_label.tolist()))}
    missing = set(memory_label.tolist()) - set(place)
    if missing:
        raise ValueError(f"memory characters {sorted(missing)} have no target")
    classes = lambda labels: np.array([place[c] for c in labels.tolist()], np.int32)
    return classes(memory_label), classes(x_label)


def own_slot_recall(model, x, memory):
    """How much of q(a|x) falls on the memory entries identical to x.

    The recall diagnostic: a model that has learned lookup (paper Fig. 2A)
    puts q(a|x) on the target's own slot. Entries equal to x (duplicates
    included; compared in float32 at any precision) all count as its own slot.

    Args:
        model: a `VMA`.
        x: `[B, *x]` targets.
        memory: `[|M|, *x]` entries.

    Returns:
        `(mass, hit)`: float `[B]` q-mass on x's own slot(s), and bool `[B]`
        whether the mode of q(a|x) is one of them.
    """
    # Compared in one dtype before the model's casts: under mixed precision x
    # is in the head's float32 and memory in the networks' bfloat16.
    same_x = tf.cast(x, tf.float32)
    same_memory = tf.cast(memory, tf.float32)
    event_axes = list(range(2, same_x.shape.rank + 1))
    same = tf.reduce_all(
        tf.equal(same_x[:, tf.newaxis], same_memory[tf.newaxis]), axis=event_axes
    )  # [B, |M|]
    x = tf.cast(x, model.head_dtype)
    memory = tf.cast(memory, model.compute_dtype)
    q_a, _ = model.address_distributions(x, memory)
    probs = q_a.probs_parameter()
    mass = tf.reduce_sum(tf.where(same, probs, tf.zeros_like(probs)), axis=-1)
    mode = tf.argmax(probs, axis=-1, output_type=tf.int32)
    hit = tf.gather(same, mode, batch_dims=1)
    return mass, hit


class ImportanceClassifier:
    """p(c|x) ∝ Σ_{a in class c} p(x, a), every memory entry a enumerated.

    p(x, a) = p(a) E_{q(z|x, m_a)}[p(x|z, m_a) p(z|m_a) / q(z|x, m_a)] is
    estimated with S samples of z per entry; entries are evaluated in chunks
    (compiled once per chunk shape) to bound memory.

    Args:
        model: a `VMA`.
        samples_per_entry: S.
        entries_per_chunk: entries evaluated together.
        jit: compile the chunk with XLA.
    """

    def __init__(
        self, model, samples_per_entry: int = 10, entries_per_chunk: int = 16, jit=True
    ):
        if samples_per_entry < 1 or entries_per_chunk < 1:
            raise ValueError("samples_per_entry and entries_per_chunk must be >= 1")
        self.model = model
        self.samples = samples_per_entry
        self.chunk = entries_per_chunk
        self._log_joint = tf.function(self._log_joint_chunk, jit_compile=jit)

    def _log_joint_chunk(self, x, memory, state, entries, seed, offset):
        s = self.samples
        addresses = tf.repeat(entries, s)[:, None] + tf.zeros(
            [1, tf.shape(x)[0]], tf.int32
        )  # [e*S, B]
        terms = self.model.compute_terms(
            x, memory, seed=seed, addresses=addresses, state=state, sample_offset=offset
        )
        # log p(x, a) = log p(a) + log E_q(z)[...]: undo the - log q(a|x) term.
        lw = tf.reshape(terms.log_weights + terms.log_q_a, [-1, s, tf.shape(x)[0]])
        return tf.reduce_logsumexp(lw, axis=1) - math.log(s)  # [e, B]

    def log_joint(self, x, memory, seed=(0, 0)):
        """float64 `[|M|, B]` estimates of log p(x, a)."""
        x = tf.cast(x, self.model.head_dtype)
        memory = tf.cast(memory, self.model.compute_dtype)
        state = self.model.memory_state(memory)
        size = int(memory.shape[0])
        seed = tf.constant(seed, tf.int32)
        pieces = []
        for start in range(0, size, self.chunk):
            entries = tf.range(start, min(size, start + self.chunk))
            offset = tf.constant(start * self.samples, tf.int64)
            pieces.append(
                self._log_joint(x, memory, state, entries, seed, offset).numpy()
            )
        return np.concatenate(pieces, axis=0).astype(np.float64)

    def __call__(self, x, memory, memory_labels, num_classes: int, seed=(0, 0)):
        """float64 `[B, N]` class probabilities for queries `x` `[B, *x]`,
        memory `[|M|, *x]` and int labels `[|M|]` in `[0, N)`."""
        log_joint = self.log_joint(x, memory, seed)  # [M, B]
        labels = np.asarray(memory_labels)
        log_class = np.full((log_joint.shape[1], num_classes), -np.inf)
        for c in range(num_classes):
            rows = log_joint[labels == c]
            if len(rows):
                log_class[:, c] = np.logaddexp.reduce(rows, axis=0)
        log_class -= np.logaddexp.reduce(log_class, axis=1, keepdims=True)
        return np.exp(log_class)


def accuracy_interval(correct: np.ndarray) -> dict:
    """Mean accuracy over episodes with a 95 % normal interval.

    Args:
        correct: `[episodes]` per-episode accuracies.

    Returns:
        `{"accuracy", "ci95", "episodes"}`.
    """
    correct = np.asarray(correct, np.float64)
    n = correct.size
    se = correct.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    return {"accuracy": float(correct.mean()), "ci95": 1.96 * se, "episodes": n}
