"""NVIL's learned baseline b(x) and running signal statistics (Mnih & Gregor 2014).

Used by the `"nvil"` address gradient estimator (`estimators.nvil_objective`):
the learning signal of the addresses sampled for x is
(L_K - c - b(x)) / max(1, sqrt(v)), where b(x) is a small MLP on the flattened
target, and c and v are exponential running averages of the batch mean and
variance of L_K - b(x). c and v are non-trainable variables of the model, so
they are checkpointed and restored with it.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import tensorflow as tf


class NVILBaseline(keras.layers.Layer):
    """Input-dependent baseline b(x) with NVIL's running mean and variance.

    The layers are built in the constructor (the input size is known), so
    the variables exist before the optimizer is built.

    Args:
        x_shape: shape of one target, e.g. `(784,)` or `(26, 26, 1)`.
        hidden_units: hidden ReLU layer sizes of the MLP (NVIL: one of 100).
        decay: running-average decay alpha: c <- alpha c + (1 - alpha) mean
            (NVIL: 0.8).

    Call args:
        x: `[B, *x_shape]` targets.

    Returns:
        `[B]` baseline values b(x).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        hidden_units: Sequence[int] = (100,),
        decay: float = 0.8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay}")
        self.x_shape = tuple(int(s) for s in x_shape)
        self.hidden_units = tuple(hidden_units)
        self.decay = decay
        size = math.prod(self.x_shape)
        self.dense_layers = [
            keras.layers.Dense(u, activation="relu", name=f"dense_{i}")
            for i, u in enumerate(self.hidden_units)
        ]
        self.dense_layers.append(keras.layers.Dense(1, name="out"))
        with keras.name_scope(self.name, caller=self):  # Paths "name/dense_0/..".
            for layer in self.dense_layers:
                layer.build((None, size))
                size = layer.units
        # Running mean c and variance v of L_K - b(x); averaged over replicas.
        self.centre = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="centre",
            aggregation="mean",
        )
        self.variance = self.add_weight(
            shape=(),
            initializer="ones",
            trainable=False,
            name="variance",
            aggregation="mean",
        )
        self.built = True

    def call(self, x):
        h = tf.reshape(tf.cast(x, self.compute_dtype), [-1, math.prod(self.x_shape)])
        for layer in self.dense_layers:
            h = layer(h)
        return h[:, 0]

    def scale(self) -> tf.Tensor:
        """max(1, sqrt(v)): NVIL's variance normalisation of the signal."""
        return tf.maximum(tf.sqrt(tf.convert_to_tensor(self.variance)), 1.0)

    def update(self, mean, variance) -> None:
        """Moves c and v towards this batch's mean and variance; a batch
        whose statistics are not finite (a step `--skip_nonfinite` skips)
        leaves both as they are: a NaN in them would stay, and make every
        later loss NaN."""
        a = self.decay
        mean = tf.cast(mean, self.centre.dtype)
        variance = tf.cast(variance, self.variance.dtype)
        finite = tf.math.is_finite(mean) & tf.math.is_finite(variance)
        for statistic, value in ((self.centre, mean), (self.variance, variance)):
            moved = a * statistic + (1.0 - a) * value
            statistic.assign(tf.where(finite, moved, statistic))

    def get_config(self):
        return {
            **super().get_config(),
            "x_shape": self.x_shape,
            "hidden_units": self.hidden_units,
            "decay": self.decay,
        }
