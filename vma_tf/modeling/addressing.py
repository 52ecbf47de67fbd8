"""The addressing head: q(a|x) and p(a) as `tfd.Categorical` over memory slots."""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf.modeling.similarity import NormalizedSimilarity

tfd = tfp.distributions


class AddressingHead(keras.layers.Layer):
    """q(a|x) ∝ exp S(m_a, x) and the learned prior p(a) ∝ exp S(m_a, e^p).

    The memory embedding network h (shared by q and p) maps each memory entry
    into the matching space once per step (`embed_memory`); the query network
    h^q maps targets x. The prior uses a learned query point e^p in place of
    h^q(x) (paper section 2), or is flat (`learned_prior=False`).

    Args:
        memory_embedder: layer `[|M|, *entry]` -> `[|M|, E]` (h).
        query_embedder: layer `[B, *x]` -> `[B, E]` (h^q).
        embed_dim: E.
        similarity: a `NormalizedSimilarity`.
        learned_prior: learn e^p (True) or use p(a) = 1/|M| (False).
    """

    def __init__(
        self,
        memory_embedder,
        query_embedder,
        embed_dim: int,
        similarity: NormalizedSimilarity | None = None,
        learned_prior: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.memory_embedder = memory_embedder
        self.query_embedder = query_embedder
        self.similarity = similarity or NormalizedSimilarity()
        self.learned_prior = learned_prior
        self.embed_dim = embed_dim
        if learned_prior:
            self.prior_query = self.add_weight(
                shape=(embed_dim,),
                name="prior_query",
                initializer=keras.initializers.RandomNormal(stddev=0.1),
            )

    def build(self, *args, **kwargs):
        # Sublayers are built lazily on their first call.
        self.built = True

    def embed_memory(self, memory):
        """`[|M|, *entry]` -> `[|M|, E]` memory embeddings e_a."""
        return self.memory_embedder(memory)

    def prior_logits(self, memory_embeddings):
        """`[|M|]` logits of p(a)."""
        if not self.learned_prior:
            return tf.zeros(tf.shape(memory_embeddings)[:1], memory_embeddings.dtype)
        query = tf.cast(self.prior_query, memory_embeddings.dtype)
        return self.similarity(memory_embeddings, query[tf.newaxis])[0]

    def posterior_logits(self, memory_embeddings, x):
        """`[B, |M|]` logits of q(a|x)."""
        return self.similarity(memory_embeddings, self.query_embedder(x))

    def call(self, memory_embeddings, x):
        """Returns `(q_a, p_a)`: Categoricals with batch shapes `[B]` and `[]`."""
        q_a = tfd.Categorical(logits=self.posterior_logits(memory_embeddings, x))
        p_a = tfd.Categorical(logits=self.prior_logits(memory_embeddings))
        return q_a, p_a
