"""The baselines without a discrete address: the memory-less `VAE` and the
soft-attention memory model `SoftAttentionVAE` (paper section 4.2). Both
train with the IWAE gradient whatever the configured estimator.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf.modeling import networks, sampling
from vma_tf.modeling.base import LatentVariableModel, Terms, as_seed
from vma_tf.modeling.memory import MemoryBuffer

tfd = tfp.distributions


def _top_level_z_terms(model, x, num_samples, seed, sample_offset, decode) -> Terms:
    """Terms of a model whose only latent is z ~ q(z|x), p(z) = N(0, I).

    Args:
        model: the `VAE` or `SoftAttentionVAE` (its encoder, `latent_dim`,
            `x_event_ndims`, `num_samples` and output head).
        x: `[B, *x]` targets in the head dtype.
        num_samples: K (None: the model's).
        seed: stateless seed of the z samples; `sample_offset` as in
            `sampling.sample`.
        decode: `z [K, B, Z] -> logits [K, B, *x]` (before the head cast).

    Returns:
        `Terms` with `log_weights` `[K, B]`, no address (`log_q_a` None,
        `kl_a` zeros `[B]`).
    """
    num_samples = num_samples or model.num_samples
    q_z = networks.gaussian(model._head(model.encoder(x)))  # [B]
    p_z = networks.standard_gaussian(model.latent_dim, x.dtype)
    z = sampling.sample(q_z, as_seed(seed), [num_samples], sample_offset)
    logits = model._head(decode(z))
    log_px = networks.bernoulli(logits, model.x_event_ndims).log_prob(x)
    return Terms(
        log_weights=log_px + p_z.log_prob(z) - q_z.log_prob(z),
        log_q_a=None,
        kl_a=tf.zeros(tf.shape(x)[:1], x.dtype),
        kl_z=tfd.kl_divergence(q_z, p_z),
        recon=-tf.reduce_mean(log_px, axis=0),
    )


class VAE(LatentVariableModel):
    """The memory-less baseline: p(z) = N(0, I), q(z|x), p(x|z).

    Uses the same encoder/decoder networks as `VMA` without the memory half, and
    the IWAE gradient (there is no discrete latent).
    """

    def __init__(
        self, encoder, decoder, latent_dim: int, x_event_ndims: int = 1, **kwargs
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.x_event_ndims = x_event_ndims

    def compute_terms(
        self,
        x,
        memory=None,
        num_samples=None,
        seed=None,
        addresses=None,
        state=None,
        sample_offset=0,
    ) -> Terms:
        x = tf.cast(x, self.head_dtype)
        return _top_level_z_terms(
            self, x, num_samples, seed, sample_offset, lambda z: self.decoder(z)
        )

    def sample(self, num, seed=None):
        """`[num, *x]` pixel probabilities with z ~ N(0, I)."""
        z = networks.standard_gaussian(self.latent_dim, self.compute_dtype).sample(
            num, seed=as_seed(seed)
        )
        return tf.sigmoid(tf.cast(self.decoder(z), tf.float32))  # float32 under bf16.


class SoftAttentionVAE(LatentVariableModel):
    """Soft-attention memory baseline (paper section 4.2, Fig. 1A).

    z is the top-level latent: p(z) = N(0, I), q(z|x); attention weights
    w(z) = softmax_a S(h(m_a), g(z)) against the memory embeddings, and the
    read-out m(z) = sum_a w_a m_a conditions the decoder exactly where VMA's
    m_a does (through the shared pyramid and the same skip paths). There is
    no discrete latent, so training uses the IWAE gradient.

    Args:
        memory: `MemoryBuffer`.
        memory_embedder: h, `[|M|, *entry]` -> `[|M|, E]`.
        query_net: g, `[..., Z]` -> `[..., E]`.
        similarity: a `NormalizedSimilarity`.
        encoder: q(z|x) network (memory-less `ConvEncoder`/`MLP`), `2 Z` outputs.
        memory_net: feature network applied to m(z) (the shared pyramid).
        decoder: conditional decoder taking `memory_features(memory_net(m))`.
        latent_dim: Z.
        x_event_ndims: event dims of x.
    """

    def __init__(
        self,
        memory: MemoryBuffer,
        memory_embedder,
        query_net,
        similarity,
        encoder,
        memory_net,
        decoder,
        latent_dim: int,
        x_event_ndims: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.memory = memory
        self.memory_embedder = memory_embedder
        self.query_net = query_net
        self.similarity = similarity
        self.encoder = encoder
        self.memory_net = memory_net
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.x_event_ndims = x_event_ndims

    def no_decay_variables(self):
        return list(self.memory.trainable_variables)

    def attention_readout(self, z, m):
        """`m(z)` `[K, B, *entry]` and weights `[K, B, |M|]` for z `[K, B, Z]`."""
        weights = tf.nn.softmax(
            self.similarity(self.memory_embedder(m), self.query_net(z)), axis=-1
        )
        flat_m = tf.reshape(m, [tf.shape(m)[0], -1])
        read = tf.linalg.matmul(weights, flat_m)  # [K, B, D]
        shape = tf.concat([tf.shape(z)[:-1], tf.shape(m)[1:]], 0)
        return tf.reshape(read, shape), weights

    def _decode(self, z, m_z):
        lead = tf.shape(z)[:-1]
        entry_rank = m_z.shape.rank - z.shape.rank + 1
        folded = tf.reshape(m_z, tf.concat([[-1], tf.shape(m_z)[-entry_rank:]], 0))
        features = self.decoder.memory_features(self.memory_net(folded))
        unfold = lambda t: tf.reshape(t, tf.concat([lead, tf.shape(t)[1:]], 0))
        return self.decoder(z, tf.nest.map_structure(unfold, features))

    def compute_terms(
        self,
        x,
        memory=None,
        num_samples=None,
        seed=None,
        addresses=None,
        state=None,
        sample_offset=0,
    ) -> Terms:
        x = tf.cast(x, self.head_dtype)
        m = self.memory(memory)

        def decode(z):
            m_z, _ = self.attention_readout(tf.cast(z, m.dtype), m)
            return self._decode(z, m_z)

        return _top_level_z_terms(self, x, num_samples, seed, sample_offset, decode)

    def sample(self, num, memory=None, seed=None):
        """`[num, *x]` pixel probabilities with z ~ N(0, I)."""
        m = self.memory(memory)
        z = sampling.standard_normal(
            [1, num, self.latent_dim], as_seed(seed), self.compute_dtype
        )
        m_z, _ = self.attention_readout(z, m)
        return tf.sigmoid(tf.cast(self._decode(z, m_z), tf.float32))[0]  # As above.
