"""Builds models from a `ModelConfig`: the paper's MNIST MLP architecture.

Section 4.1: 2-layer MLPs with 256 and 128 ReLU units, |z| = 32, a 128-d
matching space. The encoder q(z|x, m_a) uses the hidden sizes as given
(256, 128); the decoder p(x|z, m_a) mirrors them (128, 256); p(z|m_a) and the
embedding networks h (memory) and h^q (query) use (256, 128) followed by a
linear output. The embedding networks are untied from the VAE networks.
"""

from __future__ import annotations

from typing import Sequence

from vma_tf.configs import ModelConfig
from vma_tf.modeling import networks
from vma_tf.modeling.addressing import AddressingHead
from vma_tf.modeling.memory import MemoryBuffer
from vma_tf.modeling.models import VAE, VMA, LatentVariableModel
from vma_tf.modeling.similarity import NormalizedSimilarity


def build_mlp_model(config: ModelConfig, x_shape: Sequence[int],
                                        seed: int = 0) -> LatentVariableModel:
    """MLP VMA or VAE for flat images of shape `x_shape` (e.g. `(784,)`).

    Args:
        config: the model configuration.
        x_shape: shape of one target, a 1-tuple for MLPs.
        seed: seed of the model's sampling streams.

    Returns:
        An unbuilt `VMA` or `VAE`; variables are created on the first call.
    """
    if len(x_shape) != 1:
        raise ValueError(f"MLP models take flat inputs; got x_shape={x_shape}")
    x_dim = int(x_shape[0])
    hidden = tuple(config.hidden_units)
    z2 = 2 * config.latent_dim
    common = dict(num_samples=config.num_samples, baseline=config.baseline,
                                seed=seed)
    if config.kind == "vae":
        return VAE(encoder=networks.mlp(hidden, z2, name="encoder"),
                              decoder=networks.mlp(hidden[::-1], x_dim, name="decoder"),
                              latent_dim=config.latent_dim, name="vae", **common)
    if config.memory == "learned":
        memory = MemoryBuffer((config.memory_dim,), size=config.memory_size,
                                                    learned=True, name="memory")
    else:
        memory = MemoryBuffer((x_dim,), learned=False, name="memory")
    addressing = AddressingHead(
            memory_embedder=networks.mlp(hidden, config.embed_dim,
                                                                      name="memory_embedder"),
            query_embedder=networks.mlp(hidden, config.embed_dim,
                                                                    name="query_embedder"),
            embed_dim=config.embed_dim,
            similarity=NormalizedSimilarity(config.similarity),
            learned_prior=config.prior == "learned", name="addressing")
    return VMA(
            memory=memory, addressing=addressing,
            prior_net=networks.mlp(hidden, z2, name="prior_z"),
            encoder=networks.ConditionalMLP(hidden, z2, name="encoder"),
            decoder=networks.ConditionalMLP(hidden[::-1], x_dim,
                                        context=config.decoder_context,
                                        name="decoder"),
            name="vma", **common)
