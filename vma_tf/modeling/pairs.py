"""Per (target, entry) pair work of a K-sample bound over a small memory.

With K importance samples over |M| <= K entries, the K B (sample, target)
pairs of a streamed bound repeat the |M| B (entry, target) pairs. What depends
on z only through the pair — q(z|x_b, m_a) (the encoder) and
KL(q(z|x_b, m_a) || p(z|m_a)) — is computed once per pair by `pair_state` and
gathered by the sampled addresses (`gather`) in `VMA.compute_terms(pairs=)`,
which then draws z = mu + sigma eps with the same eps as the per-sample path:
the same terms to float rounding, at an encoder cost that no longer grows
with K (`evaluation.StreamedBound`; BENCHMARKS.md). Training never uses it.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf.modeling import networks

tfd = tfp.distributions


def pair_state(model, x, state, num_samples=None, rows: int = 0):
    """The encoder and the KL of z for every (entry, target) pair.

    Args:
        model: a built `VMA`.
        x: `[B, *x]` targets.
        state: `model.memory_state(memory)`.
        num_samples: the K the pairs will serve (None: any). With more
            entries than K (static shapes), pairs are more work than
            samples: None is returned and `compute_terms` runs the encoder
            per sample.
        rows: run the encoder on this many entries at a time (0: all),
            bounding its activations by `rows` B pairs.

    Returns:
        `x` `[B, *x]` (head dtype), `q_logits` `[B, |M|]`, `p_logits`
        `[|M|]`, `q_z` `[|M|, B, 2 Z]` (q(z|x_b, m_a) parameters) and `kl_z`
        `[|M|, B]`; or None (see `num_samples`).
    """
    entries = state["prior_z"].shape[0]
    if entries is None or (num_samples is not None and entries > num_samples):
        return None
    x = tf.cast(x, model.head_dtype)
    q_a, p_a = model.address_distributions(x, state=state)
    rows = rows or entries
    # Entry axis first, a broadcast target axis: [|M|, 1, ...].
    expand = lambda t, i: tf.nest.map_structure(
        lambda u: u[i : i + rows, tf.newaxis], t
    )
    q_z = tf.concat(
        [
            model._head(model.encoder(x, expand(state["encoder"], i)))
            for i in range(0, entries, rows)
        ],
        axis=0,
    )  # [|M|, B, 2 Z]
    prior = tf.broadcast_to(model._head(state["prior_z"])[:, tf.newaxis], tf.shape(q_z))
    kl_z = tfd.kl_divergence(networks.gaussian(q_z), networks.gaussian(prior))
    return {
        "x": x,
        "q_logits": q_a.logits_parameter(),
        "p_logits": p_a.logits_parameter(),
        "q_z": q_z,
        "kl_z": kl_z,
    }


def gather(pairs, addresses):
    """`(q_z params [K, B, 2 Z], kl_z [K, B])` at the pairs (a_kb, b).

    Args:
        pairs: `pair_state(...)`.
        addresses: `[K, B]` sampled addresses.
    """
    targets = tf.broadcast_to(
        tf.range(tf.shape(addresses)[1], dtype=addresses.dtype), tf.shape(addresses)
    )
    index = tf.stack([addresses, targets], axis=-1)
    return tf.gather_nd(pairs["q_z"], index), tf.gather_nd(pairs["kl_z"], index)
