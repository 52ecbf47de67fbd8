"""`NormalizedSimilarity`: the matching score S(m_a, x) of paper eq. (5)."""

from __future__ import annotations

import keras
import tensorflow as tf

from vma_tf.configs import SIMILARITIES as VARIANTS


def safe_norm(v: tf.Tensor, axis: int = -1, eps: float = 1e-6) -> tf.Tensor:
    """Euclidean norm clipped below at `eps`, with a finite gradient at 0."""
    sq = tf.reduce_sum(tf.square(v), axis=axis)
    return tf.sqrt(tf.maximum(sq, tf.cast(eps * eps, v.dtype)))


class NormalizedSimilarity(keras.layers.Layer):
    """Similarity between memory embeddings e_a and query embeddings e_q.

    Variants (paper section 2, "Similarity functions"):

    * `"normalized"` (paper eq. 5): <e_a, e_q> / ||e_a||
    * `"dot"`: <e_a, e_q>
    * `"cosine"`: <e_a, e_q> / (||e_a|| ||e_q||)

    Norms are clipped below at `eps`, so an all-zero embedding gives a score of
    0 (not NaN) and a finite gradient.

    Call args:
        memory_embeddings: `[|M|, E]`.
        queries: `[..., E]`.

    Returns:
        `[..., |M|]` scores.
    """

    def __init__(self, variant: str = "normalized", eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(
                f"similarity variant must be one of {VARIANTS}; got {variant!r}"
            )
        self.variant = variant
        self.eps = eps

    def call(self, memory_embeddings, queries):
        scores = tf.linalg.matmul(queries, memory_embeddings, transpose_b=True)
        if self.variant in ("normalized", "cosine"):
            scores = scores / safe_norm(memory_embeddings, eps=self.eps)
        if self.variant == "cosine":
            scores = scores / safe_norm(queries, eps=self.eps)[..., tf.newaxis]
        return scores

    def get_config(self):
        return {**super().get_config(), "variant": self.variant, "eps": self.eps}
