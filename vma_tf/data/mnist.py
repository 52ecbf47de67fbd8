"""Larochelle & Murray's fixed binarization of MNIST (the ``.amat`` text files).

Each split is a gzipped text file with one image per line: 784 characters ``0``/``1``
separated by single spaces and terminated by ``\\n``, i.e. exactly 1568 bytes per line,
pixels in row-major 28x28 order. The test split is sorted by digit class, and the
train/valid splits are in a fixed shuffled order, so shuffle before minibatching.
"""

from __future__ import annotations

import functools
import gzip
import os
import pathlib
import zlib

import numpy as np

from vma_tf.data.files import DataError, find_file

__all__ = ["SPLIT_SIZES", "load_binarized_mnist"]

SPLIT_SIZES: dict[str, int] = {"train": 50000, "valid": 10000, "test": 10000}
"""Number of images in each split."""

_PIXELS = 784
_LINE_BYTES = 2 * _PIXELS  # 784 digits, 783 spaces and a newline.


def _parse_amat(raw: bytes, source: str) -> np.ndarray:
    """Parse the decompressed text of a binarized-MNIST ``.amat`` file.

    Args:
        raw: The whole decompressed file.
        source: The file name, used in error messages.

    Returns:
        A uint8 array `[N, 784]` of 0/1 (writable, C-contiguous).

    Raises:
        DataError: If the bytes are not in the expected format.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size == 0 or buf.size % _LINE_BYTES != 0:
        raise DataError(
            f"{source}: {buf.size} bytes is not a whole number of {_LINE_BYTES}-byte lines "
            f"(784 space-separated 0/1 values per line)"
        )
    lines = buf.reshape(-1, _LINE_BYTES)
    separators = lines[:, 1::2]
    if (separators[:, :-1] != ord(" ")).any() or (separators[:, -1] != ord("\n")).any():
        raise DataError(
            f"{source}: values are not separated by single spaces with one line per image"
        )
    pixels = lines[:, ::2] - np.uint8(ord("0"))  # Out-of-range digits wrap to > 1.
    if (pixels > 1).any():
        raise DataError(f"{source}: found values other than 0 and 1")
    return np.ascontiguousarray(pixels)


@functools.lru_cache(maxsize=8)
def _load_cached(resolved_path: str, size: int, mtime_ns: int) -> np.ndarray:
    """Read, parse and freeze one ``.amat.gz`` file; cached per (path, size, mtime)."""
    del size, mtime_ns  # Only part of the cache key, so a replaced file is re-read.
    path = pathlib.Path(resolved_path)
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot be decompressed ({type(exc).__name__}: {exc})"
        ) from exc
    images = _parse_amat(raw, str(path))
    images.flags.writeable = False
    return images


def load_binarized_mnist(
    split: str, data_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Load one split of Larochelle's binarized MNIST.

    The file ``binarized_mnist_{split}.amat.gz`` is located (and verified) with
    :func:`vma_tf.data.files.find_file`. The parsed array is cached in-process and
    shared between calls, so it is returned read-only; copy it before modifying.

    Args:
        split: One of ``"train"`` (50000 images), ``"valid"`` (10000) or ``"test"`` (10000).
        data_dir: An explicit data directory, searched before ``$VMA_DATA_DIR`` and ``./data``.

    Returns:
        A read-only uint8 array `[N, 784]` with values 0/1, pixels in row-major `[28, 28]` order.

    Raises:
        ValueError: If ``split`` is not one of the allowed splits.
        DataError: If the file is missing, corrupted or not in the expected format.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(
            f"unknown binarized MNIST split {split!r}; expected one of {', '.join(SPLIT_SIZES)}"
        )
    path = find_file(f"binarized_mnist_{split}.amat.gz", data_dir).resolve()
    stat = path.stat()
    images = _load_cached(str(path), stat.st_size, stat.st_mtime_ns)
    expected = (SPLIT_SIZES[split], _PIXELS)
    if images.shape != expected:
        raise DataError(f"{path}: parsed shape {images.shape}, expected {expected}")
    return images
