"""Convolutional networks of the Omniglot experiments (paper section 4.2).

Architecture, with the choices where the paper is ambiguous:

* `ConvPyramid`: 6 conv layers, 3x3 kernels, `channels` maps (48 or 64; 32
  for the small model), ReLU, stride 2 in every second layer: 26 -> 26 -> 13
  -> 13 -> 7 -> 7 -> 4 (or 28 -> 14 -> 7 -> 4). It returns the first layer's
  pre-activation and the activations `(pre0, a0, a2, a4, top)` at 26, 26, 13,
  7 and 4, for the decoder's skip paths (`ConvPyramid.call`).
* **Tying.** One `ConvPyramid` of m is shared by p(z|m_a) and p(x|m_a, z)
  (we read the paper's "we tie the parameters of the convolutional
  downscaling layers in q(z|m) and p(x|m, z)" as p(z|m), the other network of
  m alone). q(z|x, m_a) takes "the concatenation of x and m": its first layer
  is conv_m(m_a) + conv_x(x) (`joint=True`), with its own pyramid by default
  or, with `tie_pyramid`, the same layers as m's pyramid (then p's pyramid is
  q's with x = 0 and conv_x is q's only extra parameter; measured worse).
  conv_m(m) and m's whole pyramid are computed once per memory entry; the
  rest of q's pyramid runs per (sample, target) pair.
* `ConvEncoder` q(z|x, m_a): the flattened top of the joint pyramid into an
  MLP with one hidden layer and 2|z| outputs.
* `TopMLP` p(z|m_a): the flattened top of P(m_a) into an MLP -> 2|z|.
* `ConvDecoder` p(x|m_a, z): P(m_a)'s top is mapped to a |z|-vector,
  concatenated with z, projected to a 4x4 map and upscaled by
  transposed convolutions (conv 3x3 stride 1, transposed conv 3x3 stride 2,
  cropped to the pyramid's sizes) mirroring the pyramid; **skip paths**
  concatenate the pyramid activation of m_a at each resolution (4, 7, 13, 26)
  to the matching upscaling layer (U-Net style), so the next conv learns how
  much of the template to use. Without memory (the VAE) there are no skips.
  The paper does not say what follows the full-resolution skip; with
  `refine=2` (the Omniglot presets) two more 3x3 ReLU convs do, so the
  logits are a non-linear function of the template and the z path (5 nats
  better than none at 5000 steps with 32 maps, RESULTS.md); the VAE has the
  same layers.
* `ConvEmbedder` h(m), h^q(x): their own (untied) pyramid, flattened, an MLP
  with one hidden layer, and a linear map into the matching space.

All layers take images `[N, H, W, C]`; the decoder and encoder also accept
extra leading sample dims (`[K, B, ...]`), folded into the batch for the
convolutions. The stride-2 layers `StridedConv2D` and `SubPixelConv2DTranspose`
(`vma_tf.modeling.strided`) are re-exported here.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from vma_tf.configs import SKIP_MODES
from vma_tf.modeling.networks import MLP
from vma_tf.modeling.strided import StridedConv2D, SubPixelConv2DTranspose, add_bias

__all__ = [
    "ConvDecoder",
    "ConvEmbedder",
    "ConvEncoder",
    "ConvPyramid",
    "StridedConv2D",
    "SubPixelConv2DTranspose",
    "TopMLP",
]


def _fold(x, inner_rank: int):
    """Folds leading dims of `x` into one batch dim; returns (x, leading shape)."""
    shape = tf.shape(x)
    split = x.shape.rank - inner_rank
    folded = tf.reshape(x, tf.concat([[-1], shape[split:]], 0))
    return folded, shape[:split]


def _unfold(x, lead, inner_rank: int):
    """Inverse of `_fold`: `[N, *inner]` -> `[*lead, *inner]`."""
    return tf.reshape(x, tf.concat([lead, tf.shape(x)[1:]], 0))


class ConvPyramid(keras.layers.Layer):
    """Downscaling pyramid: 6 conv 3x3 layers, stride 2 in every second one.

    Stride-2 layers are `StridedConv2D`; `fast=True` computes them by
    space-to-depth (same variables and outputs; default False, as
    `ModelConfig.fast_convs`).

    With `joint=True` the first layer also has an x-half, for q(z|x, m_a)
    on the channel concatenation [m_a, x]: conv([m, x]) = conv_m(m) + conv_x(x).
    The m-half (`convs[0]`) and every later layer are shared with the pyramid
    of m alone, so p's pyramid is q's with x = 0 (fully tied), and conv_m(m)
    is computed once per memory entry.

    Call args:
        images: `[N, H, W, C]`.

    Returns:
        `(pre0, a0, a2, a4, top)`: the first layer's pre-activation
        `[N, H, W, ch]`, then the last activation at each resolution, finest
        first: `[N, H, W, ch]`, `[N, H/2, W/2, ch]`, `[N, H/4, ...]`,
        `[N, H/8, ...]` (sizes rounded up).
    """

    def __init__(
        self,
        channels: int = 64,
        num_layers: int = 6,
        joint: bool = False,
        fast: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_layers < 2 or num_layers % 2:
            raise ValueError(f"num_layers must be even and >= 2; got {num_layers}")
        self.channels = channels
        self.num_layers = num_layers
        self.convs = [
            StridedConv2D(channels, fast=fast, activation="relu", name=f"conv_{i}")
            if i % 2
            else keras.layers.Conv2D(
                channels,
                3,
                padding="same",
                activation=None if i == 0 else "relu",
                name=f"conv_{i}",
            )
            for i in range(num_layers)
        ]
        self.joint_conv = None
        if joint:
            self.joint_conv = keras.layers.Conv2D(
                channels, 3, padding="same", use_bias=False, name="conv_0_joint"
            )

    def build(self, *args, **kwargs):
        # Sublayers (and the joint half, used only by q) build on first call.
        self.built = True

    def call(self, images):
        return self.from_preactivation(self.convs[0](images))

    def from_preactivation(self, pre):
        """The pyramid from the first layer's pre-activation `[N, H, W, ch]`."""
        h = tf.nn.relu(pre)
        outputs = [pre, h]
        for i in range(1, self.num_layers):
            h = self.convs[i](h)
            # The last activation at each resolution: a0, a2, a4 (each
            # followed by a stride-2 layer) and the top.
            if i % 2 == 0 or i == self.num_layers - 1:
                outputs.append(h)
        return tuple(outputs)


def _flat_top(features):
    """`[N, H, W, C]` -> `[N, H*W*C]`; the width is static so `N = 0` works."""
    top = features[-1]
    width = 1
    for d in top.shape[1:]:
        width *= int(d)
    return tf.reshape(top, tf.stack([tf.shape(top)[0], width]))


class TopMLP(keras.layers.Layer):
    """MLP on the flattened top of a pyramid's features (e.g. p(z|m_a))."""

    def __init__(self, hidden_units: Sequence[int], output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.mlp = MLP(hidden_units, output_dim, name="mlp")

    def call(self, features):
        return self.mlp(_flat_top(features))


class ConvEncoder(keras.layers.Layer):
    """q(z|x, m_a): the tied pyramid on the concatenation [m_a, x], then an MLP.

    Args:
        pyramid: the shared `ConvPyramid` (`joint=True` when conditional).
        hidden_units: hidden sizes of the MLP (paper: one hidden layer).
        output_dim: 2|z|.
        conditional: False for the memory-less VAE (q(z|x) = MLP(P(x))).

    Methods:
        memory_features(memory): the m-half of the pyramid's first layer on
            the |M| raw entries, `[|M|, H, W, ch]` (computed once per step).
        call(x, gathered): `[B, H, W, C]` and `[..., B, H, W, ch]` ->
            `[..., B, out]`; the rest of the pyramid runs per (sample, target).
    """

    def __init__(
        self,
        pyramid: ConvPyramid,
        hidden_units: Sequence[int],
        output_dim: int,
        conditional: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if conditional and pyramid.joint_conv is None:
            raise ValueError("a conditional ConvEncoder needs ConvPyramid(joint=True)")
        self.pyramid = pyramid
        self.conditional = conditional
        self.head = MLP(hidden_units, output_dim, name="head")

    def build(self, *args, **kwargs):
        # The pyramid and head build on first call (the conditional encoder
        # is first called from `memory_features`, not `__call__`).
        self.built = True

    def memory_features(self, memory):
        return self.pyramid.convs[0](memory)

    def call(self, x, gathered=None):
        if not self.conditional:
            return self.head(_flat_top(self.pyramid(x)))
        pre = gathered + self.pyramid.joint_conv(x)  # [..., B, H, W, ch]
        folded, lead = _fold(pre, 3)
        top = _flat_top(self.pyramid.from_preactivation(folded))
        top = tf.reshape(top, tf.concat([lead, tf.shape(top)[1:]], 0))
        return self.head(top)


class ConvDecoder(keras.layers.Layer):
    """p(x|m_a, z): transposed-conv upscaling with skip paths from P(m_a).

    Args:
        image_shape: `(H, W, C)` of the output.
        channels: feature maps (as the pyramid).
        latent_dim: |z|; P(m_a)'s top is also mapped to a |z|-vector.
        num_layers: conv layers, as the pyramid (6).
        conditional: False for the VAE (no memory, no skips).
        skip_mode: `"concat"` (default): the skip activation is concatenated
            to the upscaling path and the next conv learns how much of the
            template to use; `"add"`: added before the ReLU (the decoder
            cannot weight it apart from its own features; measured worse).
        skip_levels: resolutions, coarsest first, that receive a skip path
            (all `num_layers // 2 + 1` by default).
        fast: upscale with sub-pixel convolutions (`SubPixelConv2DTranspose`
            with `fast=True`: same variables and outputs as
            `Conv2DTranspose`, no work on dilation holes; default False, as
            `ModelConfig.fast_convs`).
        refine: extra 3x3 ReLU conv layers at full resolution before the
            logits (0: the logits conv is the one that sees the full-resolution
            skip, so the output is *linear* in m_a's finest features; >= 1:
            the first refine conv takes the skip and the output can gate the
            template by the z path).

    Per-entry work: with `skip_mode="concat"` the conv after each skip sees
    `[relu(h), s_a]`, and conv([h, s]) = conv_h(h) + conv_s(s): the s-half
    `conv_s(s_a)` is computed once per memory entry in `memory_features`
    (the same kernel, sliced), not once per (sample, target).

    Methods:
        memory_features(features): per-entry `(m_vec [|M|, |z|], skips...)`,
            each concatenated skip already through its conv's s-half.
        call(z, gathered): `z` `[..., Z]` and gathered per-entry features with
            the same leading dims -> logits `[..., H, W, C]`.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: int = 64,
        latent_dim: int = 64,
        num_layers: int = 6,
        conditional: bool = True,
        skip_mode: str = "concat",
        skip_levels: int | None = None,
        fast: bool = False,
        refine: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.skip_levels = num_layers // 2 + 1 if skip_levels is None else skip_levels
        if skip_mode not in SKIP_MODES:
            raise ValueError(
                f"skip_mode must be one of {SKIP_MODES}; got {skip_mode!r}"
            )
        self.skip_mode = skip_mode
        self.image_shape = tuple(int(s) for s in image_shape)
        self.channels = channels
        self.conditional = conditional
        h, w, c = self.image_shape
        sizes = [(h, w)]
        for _ in range(num_layers // 2):
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        self.sizes = sizes  # e.g. [(26,26),(13,13),(7,7),(4,4)]
        top_h, top_w = sizes[-1]
        if conditional:
            self.m_proj = keras.layers.Dense(latent_dim, name="m_proj")
        self.to_map = keras.layers.Dense(
            top_h * top_w * channels, activation=None, name="to_map"
        )
        self.convs, self.upconvs = [], []
        for i in range(num_layers // 2):
            self.convs.append(
                keras.layers.Conv2D(
                    channels, 3, padding="same", activation="relu", name=f"conv_{i}"
                )
            )
            self.upconvs.append(
                SubPixelConv2DTranspose(channels, fast=fast, name=f"upconv_{i}")
            )
        self.refine = [
            keras.layers.Conv2D(
                channels, 3, padding="same", activation="relu", name=f"refine_{i}"
            )
            for i in range(refine)
        ]
        self.out = keras.layers.Conv2D(c, 3, padding="same", name="logits")

    def _conv_after(self, level: int):
        """The conv that follows the skip of `level` (coarsest = 0)."""
        if level < len(self.convs):
            return self.convs[level]
        return self.refine[0] if self.refine else self.out

    def _projects(self, level: int) -> bool:
        """Whether the skip of `level` is concatenated (and so projected)."""
        return self.skip_mode == "concat" and level < self.skip_levels

    def _build_concat_input(self, layer):
        """Builds `layer` for `2 * channels` inputs, under this layer's name
        scope so that its variables get the paths they get when built inside
        `call` (`decoder/conv_0/kernel`; checkpoints key on them)."""
        if not layer.built:
            with keras.name_scope(self.name):
                layer.build((None, None, None, 2 * self.channels))

    def memory_features(self, features):
        """`(m_vec, skip_top, ..., skip_full)` for |M| entries.

        A concatenated skip `s` is returned as `conv_s(s)` `[|M|, h, w, ch]`
        (no bias), the s-half of the conv that follows it.
        """
        skips = list(reversed(features[1:]))  # coarsest first: 4, 7, 13, 26
        for level, s in enumerate(skips):
            if self._projects(level):
                layer = self._conv_after(level)
                self._build_concat_input(layer)
                kernel = tf.cast(layer.kernel[:, :, self.channels :], s.dtype)
                skips[level] = tf.nn.conv2d(s, kernel, 1, "SAME")
        return (self.m_proj(_flat_top(features)),) + tuple(skips)

    def _merge_conv(self, h, skip, level: int):
        """relu(h) joined with the skip of m_a, through the next conv."""
        layer = self._conv_after(level)
        if skip is None or level >= self.skip_levels:
            return layer(tf.nn.relu(h))
        if self.skip_mode == "add":
            return layer(tf.nn.relu(h + skip))
        # conv([relu(h), s]) = conv_h(relu(h)) + conv_s(s); conv_s(s) is `skip`.
        self._build_concat_input(layer)
        kernel = tf.cast(layer.kernel[:, :, : self.channels], h.dtype)
        y = tf.nn.conv2d(tf.nn.relu(h), kernel, 1, "SAME") + skip
        return layer.activation(add_bias(y, layer.bias))

    def call(self, z, gathered=None):
        z, lead = _fold(z, 1)
        top_h, top_w = self.sizes[-1]
        if self.conditional:
            m_vec = _fold(gathered[0], 1)[0]
            skips = [_fold(g, 3)[0] for g in gathered[1:]]
            h = self.to_map(tf.concat([z, m_vec], axis=-1))
        else:
            skips = [None] * (len(self.upconvs) + 1)
            h = self.to_map(z)
        h = tf.reshape(h, [-1, top_h, top_w, self.channels])
        for i, upconv in enumerate(self.upconvs):
            h = self._merge_conv(h, skips[i], i)
            th, tw = self.sizes[-2 - i]
            h = upconv(h)[:, :th, :tw, :]
        h = self._merge_conv(h, skips[-1], len(self.upconvs))
        if self.refine:  # h is the first refine conv's (ReLU) output.
            for layer in self.refine[1:]:
                h = layer(h)
            h = self.out(h)
        return _unfold(h, lead, 3)


class ConvEmbedder(keras.layers.Layer):
    """h(m) or h^q(x): own pyramid -> flatten -> MLP (1 hidden) -> `[N, E]`."""

    def __init__(
        self,
        channels: int,
        hidden_units: Sequence[int],
        embed_dim: int,
        num_layers: int = 6,
        fast: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pyramid = ConvPyramid(channels, num_layers, fast=fast, name="pyramid")
        self.mlp = MLP(hidden_units, embed_dim, name="mlp")

    def call(self, images):
        return self.mlp(_flat_top(self.pyramid(images)))
