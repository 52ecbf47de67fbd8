"""tf.data batch makers: what each batch holds, checked by value.

Recall batches draw their targets from their own memory, shuffled epochs visit
every example once per epoch, sequential batches are the first full batches in
order, and each MNIST split comes from its own file.
"""

import numpy as np
import pytest
import tensorflow as tf

from vma_tf import configs
from vma_tf.data import pipelines
from vma_tf.data.mnist import load_binarized_mnist


def _distinct_images(n, d=12, seed=0):
    """`[n, d]` uint8 0/1 images, all distinct (row i spells i in binary
    in its first bits, random bits after)."""
    rng = np.random.default_rng(seed)
    images = (rng.uniform(size=(n, d)) > 0.5).astype(np.uint8)
    bits = (np.arange(n)[:, None] >> np.arange(8)) & 1
    images[:, :8] = bits
    return images


def _row_ids(rows, images):
    """Index into `images` of each row of `rows` (every row must be found)."""
    index = {r.tobytes(): i for i, r in enumerate(images)}
    return np.array([index[r.astype(np.uint8).tobytes()] for r in rows])


def test_recall_targets_are_their_memory_rows():
    """Memory: |M| distinct dataset images; every target is the memory row
    named by `target_slot`; different steps draw different memories."""
    images = _distinct_images(200)
    make = pipelines.recall_batch_fn(tf.constant(images), 16, 40, seed=3, stream=0)
    seen = []
    for step in range(3):
        batch = {k: v.numpy() for k, v in make(tf.constant(step, tf.int64)).items()}
        memory, x, slot = batch["memory"], batch["x"], batch["target_slot"]
        assert memory.shape == (16, 12) and x.shape == (40, 12)
        ids = _row_ids(memory, images)
        assert len(set(ids)) == 16  # Distinct images.
        np.testing.assert_array_equal(x, memory[slot])
        assert len(set(slot)) > 8  # Targets spread over the memory.
        seen.append(tuple(sorted(ids)))
    assert len(set(seen)) == 3


def test_epoch_batches_visit_each_example_once_per_epoch():
    """N = 23 examples, B = 5: positions step * B + i run through a fresh
    permutation per epoch (batches straddle epoch boundaries)."""
    n, b = 23, 5
    images = _distinct_images(n)
    make = pipelines.epoch_batch_fn(tf.constant(images), b, seed=1, stream=0)
    batch = lambda step: make(tf.constant(step, tf.int64))["x"].numpy()
    # 70 positions: epochs 0, 1 and 2 whole, and the first of epoch 3.
    ids = np.concatenate([_row_ids(batch(s), images) for s in range(14)])
    epochs = [ids[:n], ids[n : 2 * n], ids[2 * n : 3 * n]]
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled.
    np.testing.assert_array_equal(_row_ids(batch(3), images), ids[15:20])


@pytest.mark.parametrize("max_batches,expected", [(0, 4), (2, 2), (9, 4)])
def test_sequential_batches_are_the_first_full_batches_in_order(max_batches, expected):
    images = _distinct_images(23)
    batches = list(pipelines.sequential_batches(images, 5, max_batches))
    assert len(batches) == expected
    got = np.concatenate([b["x"].numpy() for b in batches])
    np.testing.assert_array_equal(got, images[: 5 * expected].astype(np.float32))
    # With a seed, a part of the file is a random subset (a sorted file does
    # not bias it), in file order; all of it is the same as without.
    seeded = [
        np.concatenate(
            [
                b["x"].numpy()
                for b in pipelines.sequential_batches(images, 5, max_batches, s)
            ]
        )
        for s in (0, 1)
    ]
    if expected == 4:
        for got_s in seeded:
            np.testing.assert_array_equal(got_s, got)
        return
    ids = [_row_ids(g, images) for g in seeded]
    for i in ids:
        assert len(set(i)) == 10 and list(i) == sorted(i)
    assert list(ids[0]) != list(ids[1]) and list(ids[0]) != list(range(10))


def test_mnist_splits_come_from_their_own_files():
    """Train batches are training images; `valid` and (periodically cut by
    --eval_batches) `test` evaluate images of their own files; the final
    `test` is the whole file whatever --eval_batches says; the three files
    share no image."""
    config = configs.override(
        configs.get_preset("mnist_vae"), batch_size=8, eval_batches=2
    )
    data = pipelines.mnist_data(config)
    files = {s: load_binarized_mnist(s) for s in ("train", "valid", "test")}
    final = np.concatenate([b["x"].numpy() for b in data.final_evals["test"]])
    np.testing.assert_array_equal(final, files["test"].astype(np.float32))
    first = pipelines.mnist_data(configs.override(config, eval_subset="first"))
    test_sets = lambda d: {"test": pipelines.eval_batches(files["test"], d)}
    for split, sets, firsts in (
        ("valid", data.evals, first.evals),
        (
            "test",
            test_sets(config),
            test_sets(configs.override(config, eval_subset="first")),
        ),
    ):
        assert list(sets) == [split]
        got = np.concatenate([b["x"].numpy() for b in firsts[split]])
        np.testing.assert_array_equal(got, files[split][:16].astype(np.float32))
        # The default: 16 images drawn from the whole file, in file order.
        got = np.concatenate([b["x"].numpy() for b in sets[split]])
        ids = _row_ids(got, files[split])
        assert len(set(ids)) == 16 and list(ids) == sorted(ids) and ids[-1] > 1000
    train_rows = {r.tobytes() for r in files["train"][:5000]}
    x = data.make_batch(tf.constant(7, tf.int64))["x"].numpy().astype(np.uint8)
    assert {r.tobytes() for r in x} <= {r.tobytes() for r in files["train"]}
    for split in ("valid", "test"):
        assert not {r.tobytes() for r in files[split][:200]} & train_rows


def test_mnist_recall_sample_memory_follows_eval_seed():
    """The sample grid's memory is drawn with `eval_seed`, as recall's test
    memories are: runs of different seeds show samples from one memory."""
    base = configs.override(configs.get_preset("mnist_recall"), memory_size=8)
    a = pipelines.mnist_data(base).sample_memory
    b = pipelines.mnist_data(configs.override(base, seed=5)).sample_memory
    c = pipelines.mnist_data(configs.override(base, eval_seed=5)).sample_memory
    assert a.shape == (8, 784)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "preset,fields",
    [
        ("mnist_vae", {}),
        ("mnist_recall", {"memory_size": 8}),
        ("mnist_recall", {"memory_size": 8, "eval_memory_size": 16}),
        ("mnist_recall", {"memory_size": 8, "eval_memory_size": 8}),
        ("omniglot_learned", {}),
        ("omniglot_fewshot", {}),
    ],
)
def test_periodic_splits_name_the_periodic_evaluations(preset, fields):
    """`configs.periodic_splits` (what the reporting tools and
    `launchers.time_to_quality` check --split against before TensorFlow
    loads) names exactly the datasets training evaluates periodically."""
    from vma_tf.data.experiments import make_data

    config = configs.override(configs.get_preset(preset), **fields)
    assert tuple(make_data(config).evals) == configs.periodic_splits(config)
