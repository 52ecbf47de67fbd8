"""Keras' stride-2 / transposed conv layers against their `fast_convs` forms."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from vma_tf.benchmark.timing import time_calls
from vma_tf.modeling import conv


def conv_layer_timings(
    batch: int = 128, channels: int = 64, steps: int = 15, warmup: int = 2
) -> list[dict[str, Any]]:
    """Forward+backward ms of each stride-2 / transposed conv of the Omniglot
    nets, Keras' layer against its `fast_convs` form, under XLA (median).

    Args:
        batch: B of the `[B, H, W, channels]` input.
        channels: input and output channels of each conv.
        steps: timed calls of each (median reported).
        warmup: untimed calls after compilation.

    Returns:
        Rows `{"layer", "input_shape", "keras_ms", "fast_ms"}`.
    """
    cases = [
        ("transposed conv 13 -> 26", 13, conv.SubPixelConv2DTranspose),
        ("transposed conv 7 -> 14", 7, conv.SubPixelConv2DTranspose),
        ("transposed conv 4 -> 8", 4, conv.SubPixelConv2DTranspose),
        ("stride-2 conv 26 -> 13", 26, conv.StridedConv2D),
        ("stride-2 conv 13 -> 7", 13, conv.StridedConv2D),
        ("stride-2 conv 7 -> 4", 7, conv.StridedConv2D),
    ]
    rows = []
    for name, size, cls in cases:
        shape = (batch, size, size, channels)
        x = tf.random.stateless_normal(shape, seed=(1, 2))
        row = {"layer": name, "input_shape": list(shape)}
        for fast in (False, True):
            layer = cls(channels, fast=fast)
            layer.build(shape)

            def fwd_bwd(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(tf.square(layer(x)))
                return tape.gradient(loss, [x, *layer.trainable_variables])

            fn = tf.function(fwd_bwd, jit_compile=True)
            timing = time_calls(fn, (x,), steps, warmup=warmup)
            row["fast_ms" if fast else "keras_ms"] = 1e3 * timing["median_sec"]
        rows.append(row)
    return rows


def format_conv_layers(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'layer (XLA, fwd+bwd)':<28} {'input':>18} {'Keras ms':>9} {'fast ms':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r['layer']:<28} {str(tuple(r['input_shape'])):>18} "
            f"{r['keras_ms']:>9.1f} {r['fast_ms']:>9.1f}"
        )
    return "\n".join(lines)
