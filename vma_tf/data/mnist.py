"""MNIST through tensorflow-datasets' own ``binarized_mnist`` and ``mnist`` builders.

Binarized MNIST is Larochelle & Murray's fixed binarization (the ``.amat``
files): the test split is sorted by digit class and train/valid are in a fixed
shuffled order, so shuffle before minibatching. tfds stores examples in a
hashed order; the loaders put them back in file order
(:func:`vma_tf.data.tfds_data.file_order`), so the arrays are exactly the
rows of the raw files.
"""

from __future__ import annotations

import numpy as np

from vma_tf.data import tfds_data
from vma_tf.data.files import PathLike

__all__ = ["SPLIT_SIZES", "load_binarized_mnist", "load_mnist_train_images"]

SPLIT_SIZES: dict[str, int] = {"train": 50000, "valid": 10000, "test": 10000}
"""Number of images in each split."""

_TFDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def _in_file_order(dataset: str, split: str, data_dir: PathLike | None) -> np.ndarray:
    """uint8 `[N, 784]` images of a tfds MNIST split, rows in raw-file order, read-only."""
    records = tfds_data.read_split(tfds_data.prepare(dataset, data_dir), split)
    images = records["image"].reshape(len(records["image"]), 784)
    rows = np.empty_like(images)
    rows[tfds_data.file_order(split, len(images))] = images
    rows.flags.writeable = False
    return rows


_LOADED: dict[tuple[str, str, str], np.ndarray] = {}


def _load(dataset: str, split: str, data_dir: PathLike | None) -> np.ndarray:
    """Cached per (dataset, split, cache directory); `data_dir` only matters to prepare."""
    key = (dataset, split, str(tfds_data.cache_dir()))
    if key not in _LOADED:
        _LOADED[key] = _in_file_order(dataset, split, data_dir)
    return _LOADED[key]


def load_binarized_mnist(split: str, data_dir: PathLike | None = None) -> np.ndarray:
    """Load one split of Larochelle's binarized MNIST (tfds ``binarized_mnist``).

    Prepared once from ``binarized_mnist_{split}.amat.gz`` (see
    :func:`vma_tf.data.tfds_data.prepare`). The array is cached in-process and
    shared between calls, so it is returned read-only; copy it before modifying.

    Args:
        split: One of ``"train"`` (50000 images), ``"valid"`` (10000) or ``"test"`` (10000).
        data_dir: An explicit raw-data directory, searched before ``$VMA_DATA_DIR``
            and ``./data`` when the dataset is not yet prepared.

    Returns:
        A read-only uint8 array `[N, 784]` with values 0/1, pixels in row-major
        `[28, 28]` order, rows in the order of the ``.amat`` file.

    Raises:
        ValueError: If ``split`` is not one of the allowed splits.
        DataError: If a raw file is missing, corrupted or truncated.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(
            f"unknown binarized MNIST split {split!r}; expected one of {', '.join(SPLIT_SIZES)}"
        )
    return _load("binarized_mnist", _TFDS_SPLITS[split], data_dir)


def load_mnist_train_images(data_dir: PathLike | None = None) -> np.ndarray:
    """The 60000 grayscale MNIST training images (tfds ``mnist``), in IDX-file order.

    Prepared once from the four ``mnist_idx/*.gz`` files; cached in-process.

    Args:
        data_dir: As for :func:`load_binarized_mnist`.

    Returns:
        A read-only uint8 array `[60000, 784]` of 0..255 (the rows of
        ``train-images-idx3-ubyte.gz``, equal to keras' ``x_train``).

    Raises:
        DataError: If a raw file is missing, corrupted or truncated.
    """
    return _load("mnist", "train", data_dir)
