"""Builds models from a `ModelConfig`: MNIST MLPs and Omniglot conv nets.

Two registries replace if-chains: `ARCHITECTURES` maps
`config.architecture` to the parts factory of its networks (`MLPParts`,
`ConvParts`: memory, embedders, q(z|.) and p(x|.) networks, ...), and
`MODEL_KINDS` maps `config.kind` to the function that assembles a model from
such parts (`VMA`, `VAE`, `SoftAttentionVAE`). Their keys are
`configs.ARCHITECTURES` and `configs.KINDS`.

Keras initializers draw their seeds when a layer is constructed, so the
order in which the parts are built fixes the initial weights: the builders
keep one order per architecture (same seed => same weights as before).

MLP (`build_mlp_model`):

Section 4.1: 2-layer MLPs with 256 and 128 ReLU units, |z| = 32, a 128-d
matching space. The encoder q(z|x, m_a) uses the hidden sizes as given
(256, 128); the decoder p(x|z, m_a) mirrors them (128, 256); p(z|m_a) and the
embedding networks h (memory) and h^q (query) use (256, 128) followed by a
linear output. The embedding networks are untied from the VAE networks.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf

from vma_tf import hardware
from vma_tf.configs import ModelConfig
from vma_tf.modeling import conv, estimator_registry, networks
from vma_tf.modeling.addressing import AddressingHead
from vma_tf.modeling.memory import MemoryBuffer
from vma_tf.modeling.models import VAE, VMA, LatentVariableModel, SoftAttentionVAE
from vma_tf.modeling.nvil import NVILBaseline
from vma_tf.modeling.similarity import NormalizedSimilarity


@contextlib.contextmanager
def dtype_policy_scope(policy: str | None):
    """Builds layers under the Keras dtype `policy` (`"float32"`,
    `"mixed_bfloat16"`: `TrainConfig.precision`'s values) inside the block,
    restoring the global policy after; None: no change. Warns once per
    process (stderr) if the policy is bfloat16 and this machine would
    emulate it (`hardware.emulated_bf16_warning`)."""
    previous = keras.config.dtype_policy()
    if policy:
        _warn_if_emulated(policy)
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@functools.lru_cache(maxsize=None)
def _warn_if_emulated(policy: str) -> None:
    """Prints `hardware.emulated_bf16_warning` for `policy` if there is one;
    cached per policy: the devices (and, for bfloat16, /proc/cpuinfo) are
    read once per process."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    message = hardware.emulated_bf16_warning(policy, gpus)
    if message:
        print(message, file=sys.stderr)


def _common(config: ModelConfig, seed: int) -> dict:
    """Constructor arguments of every `LatentVariableModel`."""
    return dict(
        num_samples=config.num_samples,
        baseline=config.baseline,
        seed=seed,
        weight_decay=config.weight_decay,
        estimator=config.estimator,
        gumbel_temperature=config.gumbel_temperature,
        straight_through=config.straight_through,
    )


def _context_initializer(config: ModelConfig):
    """Kernel initializer of q(z|x, m_a)'s m_a-half (`encoder_context_init`)."""
    return "zeros" if config.encoder_context_init == "zeros" else "glorot_uniform"


def _nvil_baseline(config: ModelConfig, x_shape) -> dict:
    """`{"nvil_baseline": NVILBaseline}` for a VMA whose estimator learns a
    baseline b(x), else `{}` (other models have no such variables, so their
    checkpoints do not change)."""
    if not estimator_registry.lookup(config.estimator).learned_baseline:
        return {}
    return {"nvil_baseline": NVILBaseline(x_shape, name="nvil_baseline")}


def _memory(config: ModelConfig, entry_shape, episodic_shape, stddev: float):
    """The `MemoryBuffer`: learned `[memory_size, *entry_shape]` entries
    (initial scale `memory_init_scale`, default `stddev`) or episodic."""
    if config.memory == "learned":
        return MemoryBuffer(
            entry_shape,
            size=config.memory_size,
            learned=True,
            stddev=config.memory_init_scale or stddev,
            name="memory",
        )
    return MemoryBuffer(episodic_shape, learned=False, name="memory")


def _addressing(config: ModelConfig, embedder: Callable) -> AddressingHead:
    """q(a|x) and p(a) with embedders `embedder(name)` (h^q = h if tied)."""
    memory_embedder = embedder("memory_embedder")
    return AddressingHead(
        memory_embedder=memory_embedder,
        query_embedder=memory_embedder
        if config.tie_embedders
        else embedder("query_embedder"),
        embed_dim=config.embed_dim,
        similarity=NormalizedSimilarity(config.similarity),
        learned_prior=config.prior == "learned",
        name="addressing",
    )


class MLPParts:
    """Section 4.1's MLP networks for flat images `x_shape = (D,)`.

    Args:
        config: the model configuration.
        x_shape: `(D,)`.
        pixel_mean: `[D]` training-set pixel means, or None (see `build_model`).
    """

    x_event_ndims = 1
    memory_net = None

    def __init__(self, config: ModelConfig, x_shape, pixel_mean=None):
        if len(x_shape) != 1:
            raise ValueError(f"MLP models take flat inputs; got x_shape={x_shape}")
        self.config, self.x_shape = config, tuple(x_shape)
        self.x_dim, self.hidden = int(x_shape[0]), tuple(config.hidden_units)
        self.output_bias = None
        if config.decoder_bias_init == "data_mean" and pixel_mean is not None:
            mean = np.reshape(pixel_mean, [self.x_dim])
            self.output_bias = networks.data_mean_logits(mean)

    def encoder(self, conditional: bool):
        """q(z|x) (`conditional=False`) or q(z|x, m_a), `2 Z` outputs."""
        c, z2 = self.config, 2 * self.config.latent_dim
        if not conditional:
            return networks.mlp(self.hidden, z2, name="encoder")
        init = _context_initializer(c)
        return networks.ConditionalMLP(
            self.hidden, z2, context_initializer=init, name="encoder"
        )

    def decoder(self, conditional: bool):
        """p(x|z) or p(x|z, m_a): logits of x (hidden sizes mirrored)."""
        hidden, bias = self.hidden[::-1], self.output_bias
        if not conditional:
            return networks.mlp(hidden, self.x_dim, name="decoder", output_bias=bias)
        context = self.config.decoder_context
        return networks.ConditionalMLP(
            hidden, self.x_dim, context=context, output_bias=bias, name="decoder"
        )

    def embedder(self, name: str):
        """h or h^q: an MLP into the `embed_dim` matching space."""
        return networks.mlp(self.hidden, self.config.embed_dim, name=name)

    def memory(self):
        shape = (self.config.memory_dim,)
        return _memory(self.config, shape, (self.x_dim,), 1.0)

    def addressing_and_prior(self):
        """`(AddressingHead, p(z|m_a) network)`, p(z|m_a) built first."""
        prior_net = networks.mlp(
            self.hidden, 2 * self.config.latent_dim, name="prior_z"
        )
        if self.config.prior_z_init == "standard_normal":
            networks.standard_normal_head(prior_net)
        return _addressing(self.config, self.embedder), prior_net


class ConvParts:
    """The Omniglot conv networks (`modeling.conv`) for images `(H, W, C)`.

    m's pyramid, shared by p(z|m_a) and p(x|z, m_a) (and q's when tied), is
    built first.

    Args:
        config: the model configuration.
        x_shape: `(H, W, C)`.
        pixel_mean: unused (conv decoders start with zero output bias).
    """

    x_event_ndims = 3

    def __init__(self, config: ModelConfig, x_shape, pixel_mean=None):
        if len(x_shape) != 3:
            raise ValueError(f"conv models take (H, W, C) images; got {x_shape}")
        self.config, self.x_shape = config, tuple(x_shape)
        self.hidden = tuple(config.hidden_units)
        tied = MODEL_KINDS[config.kind].has_addresses and config.tie_pyramid
        self.memory_net = conv.ConvPyramid(
            config.channels, joint=tied, fast=config.fast_convs, name="pyramid"
        )

    def encoder(self, conditional: bool):
        """q(z|x) on m's pyramid, or q(z|x, m_a) on the joint pyramid.

        Soft attention's q(z|x) shares the pyramid its decoder reads m(z)
        through, whatever `tie_pyramid` (which ties the VMA's q): on a pyramid
        of its own it was 1.3 / 4.1 / 2.5 nats worse at 1k / 2k / 3k steps
        (32 maps, seed 0; RESULTS.md "Soft attention's q on its own pyramid").
        """
        z2 = 2 * self.config.latent_dim
        if not conditional:
            pyramid = self.memory_net
        elif self.config.tie_pyramid:
            pyramid = self.memory_net
        else:
            pyramid = self._encoder_pyramid()
        return conv.ConvEncoder(
            pyramid, self.hidden, z2, conditional=conditional, name="encoder"
        )

    def _encoder_pyramid(self) -> conv.ConvPyramid:
        """q(z|x, m_a)'s own (untied) pyramid; its first conv is the m-half."""
        c = self.config
        pyramid = conv.ConvPyramid(
            c.channels, joint=True, fast=c.fast_convs, name="encoder_pyramid"
        )
        if c.encoder_context_init == "zeros":
            pyramid.convs[0].kernel_initializer = keras.initializers.Zeros()
        return pyramid

    def decoder(self, conditional: bool):
        c = self.config
        return conv.ConvDecoder(
            self.x_shape,
            c.channels,
            c.latent_dim,
            conditional=conditional,
            skip_mode=c.skip_mode,
            skip_levels=c.skip_levels,
            fast=c.fast_convs,
            refine=c.decoder_refine,
            name="decoder",
        )

    def embedder(self, name: str):
        c = self.config
        return conv.ConvEmbedder(
            c.channels, self.hidden, c.embed_dim, fast=c.fast_convs, name=name
        )

    def memory(self):
        return _memory(self.config, self.x_shape, self.x_shape, 0.5)

    def addressing_and_prior(self):
        """`(AddressingHead, p(z|m_a) network)`, the addressing built first."""
        addressing = _addressing(self.config, self.embedder)
        prior_net = conv.TopMLP(self.hidden, 2 * self.config.latent_dim, name="prior_z")
        if self.config.prior_z_init == "standard_normal":
            networks.standard_normal_head(prior_net.mlp)
        return addressing, prior_net


def _build_vae(parts, config: ModelConfig, common: dict) -> VAE:
    return VAE(
        encoder=parts.encoder(conditional=False),
        decoder=parts.decoder(conditional=False),
        latent_dim=config.latent_dim,
        x_event_ndims=parts.x_event_ndims,
        name="vae",
        **common,
    )


def _build_soft_attention(parts, config: ModelConfig, common: dict):
    if parts.memory_net is None:
        raise ValueError("kind 'soft_attention' needs the conv architecture")
    memory = parts.memory()
    return SoftAttentionVAE(
        memory=memory,
        memory_embedder=parts.embedder("memory_embedder"),
        query_net=networks.mlp(parts.hidden, config.embed_dim, name="query_net"),
        similarity=NormalizedSimilarity(config.similarity),
        encoder=parts.encoder(conditional=False),
        memory_net=parts.memory_net,
        decoder=parts.decoder(conditional=True),
        latent_dim=config.latent_dim,
        x_event_ndims=parts.x_event_ndims,
        name="soft_attention",
        **common,
    )


def _build_vma(parts, config: ModelConfig, common: dict) -> VMA:
    memory = parts.memory()
    addressing, prior_net = parts.addressing_and_prior()
    return VMA(
        memory=memory,
        addressing=addressing,
        prior_net=prior_net,
        encoder=parts.encoder(conditional=True),
        decoder=parts.decoder(conditional=True),
        x_event_ndims=parts.x_event_ndims,
        memory_net=parts.memory_net,
        name="vma",
        **common,
        **_nvil_baseline(config, parts.x_shape),
    )


class ModelKind(NamedTuple):
    """One entry of `MODEL_KINDS`.

    Attributes:
        build: `(parts, config, common kwargs) -> LatentVariableModel`.
        has_addresses: the model has a discrete address (`VMA`).
    """

    build: Callable
    has_addresses: bool


MODEL_KINDS: dict[str, ModelKind] = {
    "vma": ModelKind(_build_vma, True),
    "vae": ModelKind(_build_vae, False),
    "soft_attention": ModelKind(_build_soft_attention, False),
}
ARCHITECTURES: dict[str, type] = {"mlp": MLPParts, "conv": ConvParts}


def build_model(
    config: ModelConfig, x_shape: Sequence[int], seed: int = 0, pixel_mean=None
) -> LatentVariableModel:
    """The model of `config` for examples of shape `x_shape`.

    Args:
        config: the model configuration.
        x_shape: shape of one example: `(D,)` (MLP) or `(H, W, C)` (conv).
        seed: seed of the model's sampling streams.
        pixel_mean: `x_shape` training-set pixel means; with
            `config.decoder_bias_init == "data_mean"` the decoder's output bias
            starts at their logits (MLP decoders). None: zeros (e.g. a model
            whose weights are restored next).

    Returns:
        An unbuilt model of `config.kind`; variables are created on the
        first call.
    """
    parts = ARCHITECTURES[config.architecture](config, x_shape, pixel_mean)
    return MODEL_KINDS[config.kind].build(parts, config, _common(config, seed))


def build_conv_model(
    config: ModelConfig, x_shape: Sequence[int], seed: int = 0
) -> LatentVariableModel:
    """Omniglot conv VMA, VAE or soft-attention model (see `modeling.conv`);
    `build_model` with `ConvParts` whatever `config.architecture`."""
    parts = ConvParts(config, x_shape)
    return MODEL_KINDS[config.kind].build(parts, config, _common(config, seed))


def build_mlp_model(
    config: ModelConfig, x_shape: Sequence[int], seed: int = 0, pixel_mean=None
) -> LatentVariableModel:
    """MLP VMA or VAE for flat images of shape `x_shape` (e.g. `(784,)`);
    `build_model` with `MLPParts` whatever `config.architecture`."""
    parts = MLPParts(config, x_shape, pixel_mean)
    return MODEL_KINDS[config.kind].build(parts, config, _common(config, seed))
