"""tf.data pipelines: stateless batch makers and the MNIST experiments.

Every training batch is a pure function of `(seed, step)`: the pipeline starts
from `tf.data.Dataset.counter(start_step)` and draws each batch with stateless
random ops seeded by the step. A run resumed at step S therefore sees exactly
the batches an uninterrupted run sees from step S on, and the data position is
just the step counter stored in the checkpoint.

Batches are dicts `{"x": [B, 784] float32}` plus `"memory": [|M|, 784]` for
episodic memory.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from vma_tf.configs import Config
from vma_tf.data.mnist import load_binarized_mnist

# Streams of one seed never share random numbers. Across seeds the key
# `2 seed + stream` of a protocol's stream (11-13, `protocols.common`) is that of
# stream 0 or 1 of seed + 5 or 6: the same numbers drawn over other data or for
# another eval_seed's evaluation (harmless; kept, so recorded results rerun).
_TRAIN_STREAM, _EVAL_STREAM = 0, 1
# Key `[eval_seed, _SUBSET_STREAM]` of the numpy generator drawing a partial
# evaluation's examples (`sequential_batches`).
_SUBSET_STREAM = 21
_SAMPLE_STREAM = 22  # recall's sample-grid memory


def _step_seed(seed: int, stream: int, step) -> tf.Tensor:
    """Stateless seed `[2]` for `step` of one stream."""
    step = tf.cast(step, tf.int64)
    return tf.stack([tf.constant(seed, tf.int64) * 2 + stream, step])


def _random_subset(num_items: int, size: int, seed) -> tf.Tensor:
    """`[size]` distinct indices in `[0, num_items)`, uniformly at random."""
    keys = tf.random.stateless_uniform([num_items], seed=seed)
    return tf.math.top_k(keys, k=size, sorted=False).indices


def recall_batch_fn(
    images: tf.Tensor, memory_size: int, batch_size: int, seed: int, stream: int
) -> Callable[[tf.Tensor], dict]:
    """Batch maker for the train-to-recall task (paper Fig. 2A).

    Memory holds `memory_size` distinct random images; the `batch_size`
    targets are drawn uniformly (with replacement) from that memory.

    Args:
        images: `[N, D]` uint8 0/1 images.
        memory_size: |M|.
        batch_size: B.
        seed: run seed.
        stream: random stream id.

    Returns:
        `step -> {"x": [B, D], "memory": [|M|, D]}` float32, with int32
        `"target_slot"` `[B]`: the memory row of each target.
    """
    num_items = int(images.shape[0])

    def make(step):
        seed_m, seed_x = tf.unstack(
            tf.random.experimental.stateless_split(_step_seed(seed, stream, step), 2)
        )
        memory = tf.gather(images, _random_subset(num_items, memory_size, seed_m))
        targets = tf.random.stateless_uniform(
            [batch_size], seed=seed_x, maxval=memory_size, dtype=tf.int32
        )
        memory = tf.cast(memory, tf.float32)
        return {
            "x": tf.gather(memory, targets),
            "memory": memory,
            "target_slot": targets,
        }

    return make


def epoch_batch_fn(
    images: tf.Tensor, batch_size: int, seed: int, stream: int
) -> Callable[[tf.Tensor], dict]:
    """Batch maker for shuffled epochs without replacement.

    Position p = step * B + i is example `index_shuffle(p mod N)` of the
    permutation for epoch p // N, so epochs are reshuffled and batches may
    straddle an epoch boundary.

    Returns:
        `step -> {"x": [B, D]}` float32.
    """
    num_items = int(images.shape[0])

    def make(step):
        pos = tf.cast(step, tf.int64) * batch_size + tf.range(
            batch_size, dtype=tf.int64
        )
        epoch = pos // num_items
        seeds = tf.stack(
            [
                tf.fill([batch_size], tf.constant(seed, tf.int64)),
                tf.fill([batch_size], tf.constant(stream, tf.int64)),
                epoch,
            ],
            axis=1,
        )  # [B, 3]
        # The raw op: tf.random.experimental.index_shuffle mis-pads [n, 3]
        # seeds (TF 2.21).
        idx = tf.raw_ops.RandomIndexShuffle(
            index=pos % num_items,
            seed=seeds,
            max_index=tf.constant(num_items - 1, tf.int64),
            rounds=4,
        )
        return {"x": tf.cast(tf.gather(images, idx), tf.float32)}

    return make


def from_counter(make, start: int, count: int | None = None) -> tf.data.Dataset:
    ds = tf.data.Dataset.counter(start)
    if count is not None:
        ds = ds.take(count)
    return ds.map(
        make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class ExperimentData:
    """Datasets of one experiment.

    Attributes:
        make_batch: `step -> batch`, a pure function of the step; `train(s)`
            is the infinite training dataset from step `s`.
        evals: `split name -> finite dataset` evaluated periodically (e.g.
            `"valid"`, `"valid_m2048"`).
        final_evals: the same for the test split, run at the end of training.
        sample_memory: `[|M|, *x]` test images for sample figures (episodic
            memory), or None.
        x_shape: shape of one example, e.g. `(784,)` or `(26, 26, 1)`.
        pixel_mean: `x_shape` mean of the training images (the decoder's
            `"data_mean"` output bias), or None.
    """

    make_batch: Callable[[tf.Tensor], dict]
    evals: dict[str, tf.data.Dataset]
    final_evals: dict[str, tf.data.Dataset]
    sample_memory: np.ndarray | None
    x_shape: tuple[int, ...]
    pixel_mean: np.ndarray | None = None

    def train(self, start_step: int = 0) -> tf.data.Dataset:
        """Training batches from `start_step` on (the resume position)."""
        return from_counter(self.make_batch, start_step)


def _eval_sets(
    config: Config, split: str, images: np.ndarray
) -> dict[str, tf.data.Dataset]:
    d, m, t = config.data, config.model, config.train
    imgs = tf.constant(images)
    if m.kind == "vma" and d.task == "recall":
        batches = d.eval_batches or 20
        out = {}
        sizes = [m.memory_size]
        if d.eval_memory_size and d.eval_memory_size != m.memory_size:
            sizes.append(d.eval_memory_size)
        for size in sizes:
            name = split if size == m.memory_size else f"{split}_m{size}"
            make = recall_batch_fn(imgs, size, t.batch_size, d.eval_seed, _EVAL_STREAM)
            out[name] = from_counter(make, 0, batches)
        return out
    return {split: eval_batches(images, config)}


def eval_batches(images: np.ndarray, config: Config) -> tf.data.Dataset:
    """The periodic evaluation batches of a fixed split, as `config.data`
    says (`eval_batches`, and `eval_subset` / `eval_seed` for a part)."""
    d = config.data
    return sequential_batches(
        images,
        config.train.batch_size,
        d.eval_batches,
        seed=d.eval_seed if d.eval_subset == "spread" else None,
    )


def sequential_batches(
    images: np.ndarray, batch_size: int, max_batches: int = 0, seed: int | None = None
) -> tf.data.Dataset:
    """Full batches `{"x": [B, *x]}` float32 of `images`, in file order.

    All of them (the remainder dropped so the compiled step sees one static
    shape), or `max_batches` of them: the first ones, or with `seed` those of
    a random subset of `max_batches * B` examples (drawn with `seed`; kept in
    file order), which a sorted file does not bias.

    Args:
        images: `[N, *x]` examples.
        batch_size: B.
        max_batches: batches to give (0: all).
        seed: draws the subset of a partial evaluation; None: the first.
    """
    n = images.shape[0] // batch_size
    if max_batches:
        n = min(n, max_batches)
    take = n * batch_size
    if seed is not None and take < images.shape[0] - images.shape[0] % batch_size:
        rng = np.random.default_rng([seed, _SUBSET_STREAM])
        images = images[np.sort(rng.choice(images.shape[0], take, replace=False))]
    xs = tf.data.Dataset.from_tensor_slices({"x": tf.cast(images[:take], tf.float32)})
    return xs.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def mnist_data(config: Config) -> ExperimentData:
    """Builds the datasets for a binarized-MNIST config.

    Args:
        config: a validated `Config` with `data.dataset == "binarized_mnist"`.

    Returns:
        `ExperimentData`.
    """
    d, m, t = config.data, config.model, config.train
    train = load_binarized_mnist("train", d.data_dir)
    valid = load_binarized_mnist("valid", d.data_dir)
    test = load_binarized_mnist("test", d.data_dir)
    train_images = tf.constant(train)
    if m.kind == "vma" and d.task == "recall":
        make = recall_batch_fn(
            train_images, m.memory_size, t.batch_size, t.seed, _TRAIN_STREAM
        )
        # Drawn with eval_seed as the test memories are: runs of different
        # seeds show their samples from the same memory.
        rng = np.random.default_rng([d.eval_seed, _SAMPLE_STREAM])
        sample_memory = test[
            rng.choice(len(test), m.memory_size, replace=False)
        ].astype(np.float32)
    else:
        make = epoch_batch_fn(train_images, t.batch_size, t.seed, _TRAIN_STREAM)
        sample_memory = None
    return ExperimentData(
        make_batch=make,
        evals=_eval_sets(config, "valid", valid),
        # Recall draws its test sets; a fixed split ends on all of its
        # batches whatever --eval_batches cuts periodically (as Omniglot's
        # learned split does).
        final_evals=(
            _eval_sets(config, "test", test)
            if m.kind == "vma" and d.task == "recall"
            else {"test": sequential_batches(test, t.batch_size)}
        ),
        sample_memory=sample_memory,
        x_shape=(784,),
        pixel_mean=train.mean(0, dtype=np.float64),
    )
