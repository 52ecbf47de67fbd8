"""In-graph validation of serving inputs (`Validator`).

Every input of an exported signature is checked inside the graph: a bad
request raises `InvalidArgumentError` with a message naming the input, and no
other kernel fails on it first.
"""

from __future__ import annotations

import tensorflow as tf


def fmt_shape(shape) -> str:
    """`(26, 26, 1)` -> `"26, 26, 1"`."""
    return ", ".join(str(s) for s in shape)


class Validator:
    """In-graph input checks that report the first failure by its message.

    Each check is a `tf.debugging.Assert`, chained to the previous one by a
    control dependency. No other kernel may fail on a bad input first (TF
    may run independent ops in any order): every condition is computed from
    padded shapes, and each validated tensor is passed on through a
    `tf.cond` that substitutes a harmless well-formed value when its check
    fails (the request fails by the assert anyway).
    """

    def __init__(self):
        self._last = None

    def check(self, condition, message: str, *data) -> None:
        deps = [] if self._last is None else [self._last]
        with tf.control_dependencies(deps):
            self._last = tf.debugging.Assert(
                condition, [message, *data], summarize=8, name="validate"
            )

    def done(self, t):
        """`t` with a control dependency on every check so far."""
        with tf.control_dependencies([self._last]):
            return tf.identity(t)

    @staticmethod
    def padded_shape(t, length: int):
        """`tf.shape(t)` padded with -1 (or cut) to exactly `length` entries."""
        shape = tf.concat([tf.shape(t), -tf.ones([length], tf.int32)], 0)
        return shape[:length]

    def guarded(self, ok, t, default, static_shape):
        """`t` if `ok` else `default()`, after the checks, with `static_shape`."""
        t = self.done(t)
        # Both branches wait for the checks: a failing check must stop the
        # substitute from reaching the model before the assert reports.
        t = tf.cond(ok, lambda: tf.identity(t), lambda: self.done(default()))
        return tf.ensure_shape(t, static_shape)

    def batch(self, t, name: str, event_shape, unit_range: bool, what: str):
        """Validates a float `[n, *event_shape]` batch (`what == "|M|"`: memory,
        n >= 1); returns it with its static shape set."""
        event_shape = tuple(int(s) for s in event_shape)
        rank = 1 + len(event_shape)
        shape = self.padded_shape(t, rank)
        expect = f"{name} must be float32 [{what}, {fmt_shape(event_shape)}]"
        ok = tf.logical_and(
            tf.equal(tf.rank(t), rank), tf.reduce_all(tf.equal(shape[1:], event_shape))
        )
        self.check(ok, expect, "got shape", tf.shape(t))
        # Empty batches are refused too: TF's CPU conv kernels return the
        # input shape unchanged for a batch of 0 (a TF bug), so they would
        # fail deep inside the model.
        self.check(shape[0] >= 1, f"{name} must not be empty ({what} >= 1 rows)")
        ok = tf.logical_and(ok, shape[0] >= 1)
        if unit_range:
            self.check(
                tf.reduce_all(tf.logical_and(t >= 0.0, t <= 1.0)),
                f"{name} values must lie in [0, 1] (pixel intensities)",
            )
        else:
            self.check(
                tf.reduce_all(tf.math.is_finite(t)), f"{name} values must be finite"
            )
        return self.guarded(
            ok,
            t,
            lambda: tf.zeros((1,) + event_shape, t.dtype),
            (None,) + event_shape,
        )

    def seed(self, seed):
        ok = tf.logical_and(
            tf.equal(tf.rank(seed), 1), tf.equal(self.padded_shape(seed, 1)[0], 2)
        )
        self.check(ok, "seed must be int32 [2]", "got shape", tf.shape(seed))
        return self.guarded(ok, seed, lambda: tf.zeros([2], seed.dtype), [2])

    def scalar(self, value, low, high, message: str):
        """Checks `low <= value <= high`; returns `value` clipped to the range."""
        self.check(tf.logical_and(value >= low, value <= high), message, "got", value)
        return tf.clip_by_value(self.done(value), low, high)

    def labels(self, memory_labels, size):
        """Validates int32 `[|M|]` labels for a memory of `size` entries."""
        ok = tf.logical_and(
            tf.equal(tf.rank(memory_labels), 1),
            tf.equal(self.padded_shape(memory_labels, 1)[0], size),
        )
        self.check(
            ok,
            "memory_labels must be int32 [|M|], one label per memory entry",
            "got shape",
            tf.shape(memory_labels),
            "|M| =",
            size,
        )
        return self.guarded(
            ok, memory_labels, lambda: tf.zeros([size], tf.int32), [None]
        )
