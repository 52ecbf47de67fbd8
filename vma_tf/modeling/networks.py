"""Fully connected networks and the distributions they parameterise.

`ConditionalMLP` is the memory-conditioned network used for q(z|x, m_a) and
p(x|z, m_a): an MLP on the concatenation [input, m_a]. Its first layer is split
into W_x input + W_m m_a + b, and the memory half W_m m is computed once per
memory entry (`memory_features`) and gathered by address, instead of once per
(sample, example) pair. The result equals the MLP on the concatenation.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class MLP(keras.layers.Layer):
    """Dense ReLU stack, optionally followed by a linear output layer.

    Unlike `keras.Sequential`, it accepts inputs of any rank `[..., D]`
    (e.g. `[K, B, D]` for K samples), applying each `Dense` to the last axis.
    """

    def __init__(
        self,
        hidden_units: Sequence[int],
        output_dim: int | None,
        activation: str = "relu",
        output_bias=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.output_dim = output_dim
        self.activation = activation
        self.dense_layers = [
            keras.layers.Dense(u, activation=activation, name=f"dense_{i}")
            for i, u in enumerate(hidden_units)
        ]
        if output_dim is not None:
            self.dense_layers.append(
                keras.layers.Dense(
                    output_dim,
                    bias_initializer=_bias_initializer(output_bias),
                    name="out",
                )
            )

    def call(self, inputs):
        h = inputs
        for layer in self.dense_layers:
            h = layer(h)
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "output_dim": self.output_dim,
            "activation": self.activation,
        }


def _bias_initializer(output_bias):
    """Initializer of an output bias: zeros, or the constant `output_bias`
    (`[D]`, e.g. the logits of the training-set pixel means)."""
    if output_bias is None:
        return "zeros"
    return keras.initializers.Constant(np.asarray(output_bias, np.float32))


def standard_normal_head(net: "MLP") -> "MLP":
    """Makes the Gaussian parameters of `net` (output `[..., 2 Z]`, as read by
    `gaussian`) start at N(0, I) for every input: zero output kernel, loc
    bias 0 and scale bias softplus^-1(1 - min_scale). Call before building."""
    out = net.dense_layers[-1]
    z = out.units // 2
    raw = float(np.log(np.expm1(1.0 - 1e-3)))
    out.kernel_initializer = keras.initializers.Zeros()
    out.bias_initializer = keras.initializers.Constant(
        np.concatenate([np.zeros(z), np.full(z, raw)]).astype(np.float32)
    )
    return net


def data_mean_logits(pixel_mean, eps: float = 1e-3) -> np.ndarray:
    """Logits of the (clipped) pixel means `[D]`: the output bias with which
    a Bernoulli decoder starts at the data's marginal."""
    p = np.clip(np.asarray(pixel_mean, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p)).astype(np.float32)


def mlp(
    hidden_units: Sequence[int],
    output_dim: int | None,
    activation: str = "relu",
    name: str | None = None,
    output_bias=None,
) -> MLP:
    """Shorthand for `MLP(hidden_units, output_dim, activation, name=name)`."""
    return MLP(hidden_units, output_dim, activation, output_bias, name=name)


class ConditionalMLP(keras.layers.Layer):
    """MLP on [input, context] with the context half computed per memory entry.

    Layer i computes act(W_i h + C_i m + b_i). With `context="first"` only the
    first layer sees the context (exactly an MLP on the concatenation
    [input, m]); with `context="all"` every layer, including the linear
    output, gets its own projection C_i m — a skip path from the memory entry
    to each layer (the MLP analogue of the paper's skip connections from the
    memory pyramid into the decoder).

    Args:
        hidden_units: hidden layer sizes, at least one.
        output_dim: size of the linear output.
        context: `"first"` or `"all"`.
        output_bias: initial bias of the output layer `[output_dim]`
            (default zeros).
        context_initializer: kernel initializer of the context projections
            (default Glorot uniform; `"zeros"`: the network starts as the MLP
            on `inputs` alone and learns how to use the context).

    Methods:
        memory_features(memory): `[|M|, Dm]` -> `[|M|, F]`, once per step.
        call(inputs, features): inputs `[..., Dx]`, gathered features
            `[..., F]` (leading dims broadcast) -> `[..., output_dim]`.
    """

    def __init__(
        self,
        hidden_units: Sequence[int],
        output_dim: int,
        activation: str = "relu",
        context: str = "first",
        output_bias=None,
        context_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not hidden_units:
            raise ValueError("ConditionalMLP needs at least one hidden layer")
        if context not in ("first", "all"):
            raise ValueError(f"context must be 'first' or 'all'; got {context!r}")
        self.hidden_units = tuple(hidden_units)
        self.output_dim = output_dim
        self.context = context
        self.activation = keras.activations.get(activation)
        sizes = self.hidden_units + (output_dim,)
        self.dense_layers = [
            keras.layers.Dense(u, name=f"dense_{i}") for i, u in enumerate(sizes[:-1])
        ] + [
            keras.layers.Dense(
                output_dim,
                bias_initializer=_bias_initializer(output_bias),
                name=f"dense_{len(sizes) - 1}",
            )
        ]
        n_ctx = 1 if context == "first" else len(sizes)
        self._context_sizes = sizes[:n_ctx]
        self.context_proj = keras.layers.Dense(
            sum(self._context_sizes),
            use_bias=False,
            kernel_initializer=context_initializer,
            name="context_proj",
        )

    def memory_features(self, memory):
        return self.context_proj(memory)

    def call(self, inputs, features):
        contexts = tf.split(features, self._context_sizes, axis=-1)
        h = inputs
        last = len(self.dense_layers) - 1
        for i, layer in enumerate(self.dense_layers):
            h = layer(h)
            if i < len(contexts):
                h = h + contexts[i]
            if i < last:
                h = self.activation(h)
        return h


def gaussian(params, min_scale: float = 1e-3) -> tfd.Distribution:
    """Diagonal Gaussian from `[..., 2 Z]` (loc, softplus-scale) params.

    Returns:
        A distribution with batch shape `[...]` and event shape `[Z]`.
    """
    loc, raw_scale = tf.split(params, 2, axis=-1)
    scale = tf.nn.softplus(raw_scale) + min_scale
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)


def standard_gaussian(latent_dim: int, dtype) -> tfd.Distribution:
    """N(0, I) with event shape `[latent_dim]`."""
    zeros = tf.zeros([latent_dim], dtype)
    return tfd.Independent(tfd.Normal(zeros, tf.ones_like(zeros)), 1)


def bernoulli(logits, event_ndims: int = 1) -> tfd.Distribution:
    """Independent Bernoulli pixels; `log_prob` accepts float 0/1 images.

    Args:
        logits: `[..., *event]` logits.
        event_ndims: number of trailing event dimensions (1 for flat images).

    Returns:
        A distribution with batch shape `[...]`.
    """
    return tfd.Independent(
        tfd.Bernoulli(logits=logits, dtype=logits.dtype),
        reinterpreted_batch_ndims=event_ndims,
    )
