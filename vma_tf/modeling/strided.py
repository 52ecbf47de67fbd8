"""Stride-2 convolutions without computing on holes.

XLA on CPU lowers a transposed convolution (and the input gradient of a
stride-2 convolution) as a convolution over an input dilated with zeros and
computes every tap, holes included (`launchers.benchmark --conv_layers`: the
decoder's 13 -> 26 upconv 53.7 ms, 31.5 ms as below). The layers here compute
the *same* functions with the *same* variables (a Keras `Conv2D` /
`Conv2DTranspose` kernel and bias, so checkpoints are interchangeable) as
dense stride-1 convolutions:

* `StridedConv2D` (3x3, stride 2, "same"): pad, `space_to_depth(2)`, then a
  2x2 "valid" convolution whose `[2, 2, 4C, O]` kernel is the 3x3 kernel
  re-indexed (ky = 2 * by + dy), zero where ky or kx would be 3.
* `SubPixelConv2DTranspose` (3x3, stride 2, "same"): pad one row/column at
  the top/left, a 2x2 "valid" convolution to `4 O` channels, then
  `depth_to_space(2)` (sub-pixel convolution). Output row 2m + dy sums input
  rows m - 1 (kernel row 2 - 2 dy, only for dy = 0) and m (kernel row dy).

Both have gradients that are ordinary convolutions. `fast=False` falls back
to the Keras implementation (the reference in tests and for FLOP counting).
`vma_tf.modeling.conv` re-exports both layers.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def strided_kernel(kernel):
    """`[3, 3, C, O]` conv kernel -> `[2, 2, 4 C, O]` on `space_to_depth(2)`."""
    k = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])  # [4, 4, C, O]
    c, o = tf.shape(kernel)[2], tf.shape(kernel)[3]
    k = tf.reshape(k, [2, 2, 2, 2, c, o])  # [by, dy, bx, dx, C, O]
    k = tf.transpose(k, [0, 2, 1, 3, 4, 5])  # [by, bx, dy, dx, C, O]
    return tf.reshape(k, [2, 2, 4 * c, o])


def add_bias(y, bias):
    """`y + bias` over the last axis, with a bias gradient accurate in any dtype.

    float32 and wider: `tf.nn.bias_add` (the numbers and oneDNN fusions of
    before). Narrower dtypes (bfloat16 under `mixed_bfloat16`): a broadcast
    add, whose gradient is a `reduce_sum` that accumulates in float32, while
    `BiasAddGrad` accumulates in bfloat16 (20 % off over a `[128, 28, 28]`
    reduction; `tests/test_conv.py`).

    Args:
        y: `[..., C]`.
        bias: `[C]` (cast to `y`'s dtype).

    Returns:
        `[..., C]`.
    """
    bias = tf.cast(bias, y.dtype)
    if y.dtype.size >= 4:
        return tf.nn.bias_add(y, bias)
    return y + bias


# Kernel row (or column) used by window tap t for output phase d; 3 = zero.
_SUBPIXEL_TAPS = ((2, 3), (0, 1))


def subpixel_kernel(kernel):
    """Keras `Conv2DTranspose` kernel `[3, 3, O, C]` -> `[2, 2, C, 4 O]`."""
    k = tf.transpose(kernel, [0, 1, 3, 2])  # [ky, kx, C, O]
    k = tf.pad(k, [[0, 1], [0, 1], [0, 0], [0, 0]])  # row/column 3 is zero
    k = tf.gather(k, _SUBPIXEL_TAPS, axis=0)  # [ty, dy, 4, C, O]
    k = tf.gather(k, _SUBPIXEL_TAPS, axis=2)  # [ty, dy, tx, dx, C, O]
    c, o = tf.shape(kernel)[3], tf.shape(kernel)[2]
    k = tf.transpose(k, [0, 2, 4, 1, 3, 5])  # [ty, tx, C, dy, dx, O]
    return tf.reshape(k, [2, 2, c, 4 * o])


class StridedConv2D(keras.layers.Conv2D):
    """`Conv2D(filters, 3, strides=2, padding="same")` via space-to-depth.

    Same variables and outputs as the Keras layer (to float rounding); see the
    comment above. Inputs `[N, H, W, C]` with static H and W.

    Args:
        filters: output channels.
        fast: use the space-to-depth form (False: the Keras implementation).
    """

    def __init__(self, filters: int, fast: bool = True, **kwargs):
        super().__init__(filters, 3, strides=2, padding="same", **kwargs)
        self.fast = fast

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        if not self.fast or h is None or w is None:
            return super().call(inputs)
        pads = []
        for n in (h, w):
            out = (n + 1) // 2
            lo = max(2 * (out - 1) + 3 - n, 0) // 2  # TF "same" padding.
            pads.append([lo, 2 * out + 2 - n - lo])
        x = tf.pad(inputs, [[0, 0], *pads, [0, 0]])
        x = tf.nn.space_to_depth(x, 2)
        y = tf.nn.conv2d(x, strided_kernel(self.kernel), 1, "VALID")
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "padding"):
            config.pop(key)
        return {**config, "fast": self.fast}


class SubPixelConv2DTranspose(keras.layers.Conv2DTranspose):
    """`Conv2DTranspose(filters, 3, strides=2, padding="same")` as a sub-pixel
    convolution: same variables and outputs `[N, 2H, 2W, filters]`.

    Args:
        filters: output channels.
        fast: use the sub-pixel form (False: the Keras implementation).
    """

    def __init__(self, filters: int, fast: bool = True, **kwargs):
        super().__init__(filters, 3, strides=2, padding="same", **kwargs)
        self.fast = fast

    def call(self, inputs):
        if not self.fast:
            return super().call(inputs)
        x = tf.pad(inputs, [[0, 0], [1, 0], [1, 0], [0, 0]])
        y = tf.nn.conv2d(x, subpixel_kernel(self.kernel), 1, "VALID")
        if self.use_bias:
            y = add_bias(y, tf.tile(self.bias, [4]))
        return self.activation(tf.nn.depth_to_space(y, 2))

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "padding"):
            config.pop(key)
        return {**config, "fast": self.fast}
