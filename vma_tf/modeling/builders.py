"""Builds models from a `ModelConfig`: MNIST MLPs and Omniglot conv nets.

`build_model` dispatches on `config.architecture`.

MLP (`build_mlp_model`):

Section 4.1: 2-layer MLPs with 256 and 128 ReLU units, |z| = 32, a 128-d
matching space. The encoder q(z|x, m_a) uses the hidden sizes as given
(256, 128); the decoder p(x|z, m_a) mirrors them (128, 256); p(z|m_a) and the
embedding networks h (memory) and h^q (query) use (256, 128) followed by a
linear output. The embedding networks are untied from the VAE networks.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import keras
import numpy as np

from vma_tf.configs import ModelConfig
from vma_tf.modeling import conv, networks
from vma_tf.modeling.addressing import AddressingHead
from vma_tf.modeling.memory import MemoryBuffer
from vma_tf.modeling.models import VAE, VMA, LatentVariableModel, SoftAttentionVAE
from vma_tf.modeling.nvil import NVILBaseline
from vma_tf.modeling.similarity import NormalizedSimilarity


@contextlib.contextmanager
def dtype_policy_scope(policy: str | None):
    """Builds layers under the Keras dtype `policy` (e.g. `"mixed_bfloat16"`)
    inside the block, restoring the global policy after; None: no change."""
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _common(config: ModelConfig, seed: int) -> dict:
    return dict(
        num_samples=config.num_samples,
        baseline=config.baseline,
        seed=seed,
        weight_decay=config.weight_decay,
        **_estimator_args(config),
    )


def _estimator_args(config: ModelConfig) -> dict:
    """Estimator settings of every model (only a VMA's address uses them)."""
    return dict(
        estimator=config.estimator,
        gumbel_temperature=config.gumbel_temperature,
        straight_through=config.straight_through,
    )


def _context_initializer(config: ModelConfig):
    """Kernel initializer of q(z|x, m_a)'s m_a-half (`encoder_context_init`)."""
    return "zeros" if config.encoder_context_init == "zeros" else "glorot_uniform"


def _nvil_baseline(config: ModelConfig, x_shape) -> dict:
    """`{"nvil_baseline": NVILBaseline}` for a VMA trained with NVIL, else
    `{}` (other models have no such variables, so their checkpoints do not
    change)."""
    if config.kind != "vma" or config.estimator != "nvil":
        return {}
    return {"nvil_baseline": NVILBaseline(x_shape, name="nvil_baseline")}


def build_model(
    config: ModelConfig, x_shape: Sequence[int], seed: int = 0, pixel_mean=None
) -> LatentVariableModel:
    """The model of `config` for examples of shape `x_shape`.

    Args:
        config: the model configuration.
        x_shape: shape of one example.
        seed: seed of the model's sampling streams.
        pixel_mean: `x_shape` training-set pixel means; with
            `config.decoder_bias_init == "data_mean"` the decoder's output bias
            starts at their logits (MLP decoders). None: zeros (e.g. a model
            whose weights are restored next).
    """
    if config.architecture == "conv":
        return build_conv_model(config, x_shape, seed)
    return build_mlp_model(config, x_shape, seed, pixel_mean)


def build_conv_model(
    config: ModelConfig, x_shape: Sequence[int], seed: int = 0
) -> LatentVariableModel:
    """Omniglot conv VMA, VAE or soft-attention model (see `modeling.conv`).

    Args:
        config: the model configuration (`architecture == "conv"`).
        x_shape: `(H, W, C)` of one image.
        seed: seed of the model's sampling streams.
    """
    if len(x_shape) != 3:
        raise ValueError(f"conv models take (H, W, C) images; got {x_shape}")
    ch, hidden, z = config.channels, tuple(config.hidden_units), config.latent_dim
    common = _common(config, seed)
    # m's pyramid, shared by p(z|m_a) and p(x|z, m_a) (and q's when tied).
    tied = config.kind == "vma" and config.tie_pyramid
    fast = config.fast_convs
    pyramid = conv.ConvPyramid(ch, joint=tied, fast=fast, name="pyramid")
    decoder = lambda conditional: conv.ConvDecoder(
        x_shape,
        ch,
        z,
        conditional=conditional,
        skip_mode=config.skip_mode,
        skip_levels=config.skip_levels,
        fast=fast,
        refine=config.decoder_refine,
        name="decoder",
    )
    if config.kind == "vae":
        return VAE(
            encoder=conv.ConvEncoder(
                pyramid, hidden, 2 * z, conditional=False, name="encoder"
            ),
            decoder=decoder(False),
            latent_dim=z,
            x_event_ndims=3,
            name="vae",
            **common,
        )
    embedder = lambda name: conv.ConvEmbedder(
        ch, hidden, config.embed_dim, fast=fast, name=name
    )
    if config.memory == "learned":
        memory = MemoryBuffer(
            x_shape,
            size=config.memory_size,
            learned=True,
            stddev=config.memory_init_scale or 0.5,
            name="memory",
        )
    else:
        memory = MemoryBuffer(x_shape, learned=False, name="memory")
    similarity = NormalizedSimilarity(config.similarity)
    if config.kind == "soft_attention":
        return SoftAttentionVAE(
            memory=memory,
            memory_embedder=embedder("memory_embedder"),
            query_net=networks.mlp(hidden, config.embed_dim, name="query_net"),
            similarity=similarity,
            encoder=conv.ConvEncoder(
                pyramid, hidden, 2 * z, conditional=False, name="encoder"
            ),
            memory_net=pyramid,
            decoder=decoder(True),
            latent_dim=z,
            x_event_ndims=3,
            name="soft_attention",
            **common,
        )
    memory_embedder = embedder("memory_embedder")
    addressing = AddressingHead(
        memory_embedder=memory_embedder,
        query_embedder=memory_embedder
        if config.tie_embedders
        else embedder("query_embedder"),
        embed_dim=config.embed_dim,
        similarity=similarity,
        learned_prior=config.prior == "learned",
        name="addressing",
    )
    prior_net = conv.TopMLP(hidden, 2 * z, name="prior_z")
    if config.prior_z_init == "standard_normal":
        networks.standard_normal_head(prior_net.mlp)
    return VMA(
        memory=memory,
        addressing=addressing,
        prior_net=prior_net,
        encoder=conv.ConvEncoder(
            pyramid if config.tie_pyramid else _encoder_pyramid(config),
            hidden,
            2 * z,
            name="encoder",
        ),
        decoder=decoder(True),
        x_event_ndims=3,
        memory_net=pyramid,
        name="vma",
        **common,
        **_nvil_baseline(config, x_shape),
    )


def _encoder_pyramid(config: ModelConfig) -> conv.ConvPyramid:
    """q(z|x, m_a)'s own (untied) pyramid; its first conv is the m-half."""
    pyramid = conv.ConvPyramid(
        config.channels, joint=True, fast=config.fast_convs, name="encoder_pyramid"
    )
    if config.encoder_context_init == "zeros":
        pyramid.convs[0].kernel_initializer = keras.initializers.Zeros()
    return pyramid


def build_mlp_model(
    config: ModelConfig, x_shape: Sequence[int], seed: int = 0, pixel_mean=None
) -> LatentVariableModel:
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
    common = _common(config, seed)
    output_bias = None
    if config.decoder_bias_init == "data_mean" and pixel_mean is not None:
        output_bias = networks.data_mean_logits(np.reshape(pixel_mean, [x_dim]))
    if config.kind == "vae":
        return VAE(
            encoder=networks.mlp(hidden, z2, name="encoder"),
            decoder=networks.mlp(
                hidden[::-1], x_dim, name="decoder", output_bias=output_bias
            ),
            latent_dim=config.latent_dim,
            name="vae",
            **common,
        )
    if config.memory == "learned":
        memory = MemoryBuffer(
            (config.memory_dim,),
            size=config.memory_size,
            learned=True,
            stddev=config.memory_init_scale or 1.0,
            name="memory",
        )
    else:
        memory = MemoryBuffer((x_dim,), learned=False, name="memory")
    prior_net = networks.mlp(hidden, z2, name="prior_z")
    if config.prior_z_init == "standard_normal":
        networks.standard_normal_head(prior_net)
    memory_embedder = networks.mlp(hidden, config.embed_dim, name="memory_embedder")
    addressing = AddressingHead(
        memory_embedder=memory_embedder,
        query_embedder=memory_embedder
        if config.tie_embedders
        else networks.mlp(hidden, config.embed_dim, name="query_embedder"),
        embed_dim=config.embed_dim,
        similarity=NormalizedSimilarity(config.similarity),
        learned_prior=config.prior == "learned",
        name="addressing",
    )
    return VMA(
        memory=memory,
        addressing=addressing,
        prior_net=prior_net,
        encoder=networks.ConditionalMLP(
            hidden,
            z2,
            context_initializer=_context_initializer(config),
            name="encoder",
        ),
        decoder=networks.ConditionalMLP(
            hidden[::-1],
            x_dim,
            context=config.decoder_context,
            output_bias=output_bias,
            name="decoder",
        ),
        name="vma",
        **common,
        **_nvil_baseline(config, x_shape),
    )
