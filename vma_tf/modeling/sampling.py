"""Seeded noise that is identical with and without XLA, on CPU and GPU.

TF's stateless float samplers (`stateless_normal`, `stateless_categorical`, and
hence `tfd.*.sample`) use different bit-to-float transforms in XLA and in the
TF kernels, so a compiled and an uncompiled step draw different samples from
one seed. The integer Philox bits are identical everywhere (for non-negative seeds), so all noise here
is derived from them: uniforms from the top 23 bits, standard normals by the
inverse CDF, categorical samples by the Gumbel-max trick. Same seed ⇒ same
samples (to ~1 ulp of the transcendental functions) whatever the compilation.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def bits_to_unit(bits: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
    """Maps uint32 random bits to (0, 1), never reaching 0 or 1.

    Uses the top 23 bits: u = (b + 1/2) / 2^23 lies in [2^-24, 1 - 2^-24],
    both ends exactly representable in float32 (with 24 bits, the top value
    2^24 - 1/2 rounds to 2^24 and u becomes 1.0, so ndtri(u) = inf).
    """
    top23 = tf.bitwise.right_shift(bits, tf.constant(9, tf.uint32))
    u = (tf.cast(top23, tf.float32) + 0.5) * (2.0**-23)
    return tf.cast(u, dtype)


def random_bits(shape, seed, offset=0) -> tf.Tensor:
    """uint32 Philox bits of `shape`, addressable by element `offset`.

    The result equals elements `[offset, offset + size)` of the flattened bits
    of one long draw with this seed, so a K-sample draw can be produced in
    chunks that reproduce the unchunked draw exactly (Philox is counter-based:
    4 words per counter step). Identical in XLA and the TF kernels.

    Args:
        shape: output shape.
        seed: stateless seed, int `[2]`.
        offset: number of elements of this stream drawn before (int scalar).

    Returns:
        `shape` uint32 tensor.
    """
    # XLA and the TF kernels disagree on negative int32 seeds (as produced by
    # `stateless_split`); clearing the sign bit makes them agree.
    seed = tf.bitwise.bitwise_and(
        tf.cast(seed, tf.int32), tf.constant(0x7FFFFFFF, tf.int32)
    )
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    offset = tf.cast(offset, tf.int64)
    lane = tf.cast(offset % 4, tf.int32)
    counter = counter + tf.stack(
        [tf.cast(offset // 4, tf.uint64), tf.constant(0, tf.uint64)]
    )
    size = tf.reduce_prod(tf.cast(shape, tf.int32))
    # Always 4 spare words, and a gather rather than a slice: neither the
    # drawn shape nor a slice start may depend on `offset`, or XLA compiles a
    # new program for every offset (both must be compile-time constants).
    flat = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=tf.reshape(size + 4, [1]),
        key=key,
        counter=counter,
        alg=1,  # Philox, explicitly: the same on every device.
        dtype=tf.uint32,
    )
    flat = tf.gather(flat, tf.range(size) + lane)
    return tf.reshape(flat, shape)


def uniform(shape, seed, dtype=tf.float32, offset=0) -> tf.Tensor:
    """U(0, 1) samples of `shape`, strictly inside (0, 1).

    Args:
        shape: output shape.
        seed: stateless seed, int `[2]`.
        dtype: float dtype of the result.
        offset: elements of this stream drawn before (see `random_bits`).

    Returns:
        `shape` tensor of `dtype`.
    """
    return bits_to_unit(random_bits(shape, seed, offset), dtype)


def standard_normal(shape, seed, dtype=tf.float32, offset=0) -> tf.Tensor:
    """N(0, 1) samples of `shape` by the inverse CDF of `uniform`.

    The inverse CDF runs in float32 for narrower dtypes (bfloat16 under
    `mixed_bfloat16`: TF's CPU kernel has float32/64 only), then casts.
    """
    dtype = tf.as_dtype(dtype)
    wide = dtype if dtype in (tf.float32, tf.float64) else tf.float32
    return tf.cast(tf.math.ndtri(uniform(shape, seed, wide, offset)), dtype)


# Above this many categories, `categorical` samples in two stages (below).
HIERARCHICAL_MIN_CATEGORIES = 16384
HIERARCHICAL_GROUP_SIZE = 512


def _gumbel_argmax(logits, seed, elements):
    """argmax over the last axis of `logits` + Gumbel noise drawn from the
    stream `seed` starting at element `elements` (one uniform per logit)."""
    u = uniform(tf.shape(logits), seed, logits.dtype, elements)
    gumbel = -tf.math.log(-tf.math.log(u))
    return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)


def _hierarchical_categorical(logits, num_samples: int, seed, offset):
    """Exact two-stage sample for a large `n`: a group of `S` consecutive
    categories by Gumbel-max over the groups' logsumexp, then a category in
    it by Gumbel-max over its `S` logits. P(a) = P(group) P(a | group), and
    the noise is O(K B (n / S + S)) instead of O(K B n). `n` may be dynamic
    (an exported signature's memory)."""
    n = tf.shape(logits)[-1]
    size = HIERARCHICAL_GROUP_SIZE
    groups = (n + size - 1) // size
    batch_shape = tf.shape(logits)[:-1]
    flat = tf.reshape(logits, tf.stack([-1, n]))  # [B, n]
    batch = tf.shape(flat)[0]
    pad = tf.fill(tf.stack([batch, groups * size - n]), flat.dtype.min)
    grouped = tf.reshape(tf.concat([flat, pad], -1), tf.stack([-1, groups, size]))
    seed_group, seed_within = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 2)
    )
    offset = tf.cast(offset, tf.int64)
    group_logits = tf.reduce_logsumexp(grouped, axis=-1)  # [B, G]
    shape = tf.stack([num_samples, batch, groups])
    g = _gumbel_argmax(
        tf.broadcast_to(group_logits, shape),
        seed_group,
        offset * tf.cast(batch * groups, tf.int64),
    )  # [K, B]
    within_logits = tf.transpose(
        tf.gather(grouped, tf.transpose(g), axis=1, batch_dims=1), [1, 0, 2]
    )  # [K, B, S]
    w = _gumbel_argmax(
        within_logits, seed_within, offset * tf.cast(batch * size, tf.int64)
    )
    out = g * size + w
    return tf.reshape(out, tf.concat([[num_samples], batch_shape], 0))


def _one_stage_categorical(logits, num_samples: int, seed, offset):
    """Gumbel-max with one uniform per (sample, logit)."""
    shape = tf.concat([[num_samples], tf.shape(logits)], axis=0)
    elements = tf.cast(offset, tf.int64) * tf.size(logits, out_type=tf.int64)
    return _gumbel_argmax(tf.broadcast_to(logits, shape), seed, elements)


def categorical(logits, num_samples: int, seed, offset=0) -> tf.Tensor:
    """Samples `[num_samples, *batch]` int32 from `Categorical(logits)`.

    Gumbel-max: argmax_a (logits_a + G_a) with G_a = -log(-log U_a) is an exact
    sample from softmax(logits). With more than `HIERARCHICAL_MIN_CATEGORIES`
    categories (decided at run time when the static size is unknown) the
    sample is drawn in two exact stages (a group of
    `HIERARCHICAL_GROUP_SIZE` categories, then one in it), so that a memory of
    100 000 entries does not need K x B x |M| noise.

    Args:
        logits: `[*batch, n]` logits.
        num_samples: number of samples.
        seed: stateless seed, int `[2]`.
        offset: samples of this stream drawn before: samples
            `[offset, offset + num_samples)` of one long draw are returned.

    Returns:
        `[num_samples, *batch]` indices in `[0, n)`.
    """
    logits = tf.convert_to_tensor(logits)
    args = (logits, num_samples, seed, offset)
    n = logits.shape[-1]
    if n is None:  # Chosen at run time, as the static size would choose.
        return tf.cond(
            tf.shape(logits)[-1] > HIERARCHICAL_MIN_CATEGORIES,
            lambda: _hierarchical_categorical(*args),
            lambda: _one_stage_categorical(*args),
        )
    if n > HIERARCHICAL_MIN_CATEGORIES:
        return _hierarchical_categorical(*args)
    return _one_stage_categorical(*args)


def sample(dist: tfd.Distribution, seed, sample_shape=(), offset=0) -> tf.Tensor:
    """Samples a `Categorical` or a (possibly `Independent`) `Normal`.

    Normal samples are reparameterised (loc + scale * eps), so gradients flow
    to the parameters exactly as with `dist.sample`.

    Args:
        dist: `tfd.Categorical`, `tfd.Normal` or `tfd.Independent(tfd.Normal)`.
        seed: stateless seed, int `[2]`.
        sample_shape: leading sample shape (a tuple of at most one int for
            `Categorical`).
        offset: slices along the leading axis of the result (the sample axis,
            or the first batch axis without one) drawn before; see
            `random_bits`.

    Returns:
        `[*sample_shape, *batch, *event]` samples.
    """
    sample_shape = tuple(sample_shape)
    if isinstance(dist, tfd.Categorical):
        if len(sample_shape) > 1:
            raise ValueError("categorical sample_shape must have rank <= 1")
        n = sample_shape[0] if sample_shape else 1
        out = categorical(dist.logits_parameter(), n, seed, offset)
        return out if sample_shape else out[0]
    base = dist.distribution if isinstance(dist, tfd.Independent) else dist
    if not isinstance(base, tfd.Normal):
        raise TypeError(f"cannot sample {type(base).__name__} here")
    loc, scale = base.loc, base.scale
    shape = tf.concat(
        [
            tf.constant(sample_shape, tf.int32),
            tf.broadcast_dynamic_shape(tf.shape(loc), tf.shape(scale)),
        ],
        axis=0,
    )
    per_slice = tf.reduce_prod(tf.cast(shape[1:], tf.int64))
    elements = tf.cast(offset, tf.int64) * per_slice
    return loc + scale * standard_normal(shape, seed, loc.dtype, elements)
