"""`MemoryBuffer`: learned (trainable) or episodic (given per batch) memory."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


class MemoryBuffer(keras.layers.Layer):
    """The memory M = (m_1, ..., m_|M|) that the address a points into.

    One interface for both sources of memory in the paper (section 2):

    * learned memory (`learned=True`): a trainable `[size, *entry_shape]`
        variable, randomly initialised and updated by the gradient of the
        objective. A call may still pass `contents` to use another memory (e.g. a
        served model queried with a user's memory).
    * episodic memory (`learned=False`): the contents are given with every
        batch (raw images of a few-shot episode) and are not trained.

    Call args:
        contents: optional `[|M|, *entry_shape]` tensor.

    Returns:
        `[|M|, *entry_shape]` memory contents.
    """

    def __init__(
        self,
        entry_shape: Sequence[int],
        size: int | None = None,
        learned: bool = False,
        stddev: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if learned and (size is None or size < 1):
            raise ValueError(f"learned memory needs size >= 1; got {size}")
        self.entry_shape = tuple(int(s) for s in entry_shape)
        self.size = size
        self.learned = learned
        self.stddev = stddev
        if learned:
            self.memory = self.add_weight(
                shape=(size,) + self.entry_shape,
                name="memory",
                initializer=keras.initializers.RandomNormal(stddev=stddev),
                trainable=True,
            )

    def call(self, contents=None):
        if contents is None:
            if not self.learned:
                raise ValueError(
                    "episodic MemoryBuffer needs `contents` "
                    f"[|M|, {', '.join(map(str, self.entry_shape))}]"
                )
            return tf.convert_to_tensor(self.memory)
        contents = tf.convert_to_tensor(contents, dtype=self.compute_dtype)
        if contents.shape.rank is not None and (
            tuple(contents.shape[1:]) != self.entry_shape
        ):
            raise ValueError(
                f"memory entries must have shape {self.entry_shape}; "
                f"got contents of shape {tuple(contents.shape)}"
            )
        return contents

    def get_config(self):
        return {
            **super().get_config(),
            "entry_shape": self.entry_shape,
            "size": self.size,
            "learned": self.learned,
            "stddev": self.stddev,
        }
