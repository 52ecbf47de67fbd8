"""Omniglot for the few-shot and learned-memory experiments (paper section 4.2).

Three views of Lake et al.'s Omniglot (1623 characters from 50 alphabets, each
drawn by 20 people), all with ink = 1:

* :func:`load_fewshot26`: the full-resolution 105x105 images cropped to 104x104
  and 4x4 max-pooled to 26x26, with alphabet labels; :func:`fewshot_split` gives
  the paper's 45/5 alphabet split (144 test characters).
* :func:`load_gmn28`: the 28x28 copy from Generative Matching Networks, split
  into the official background (train) and evaluation (test) sets.
* :func:`load_learned28`: an unlabeled 28x28 train/test split by drawer for the
  learned-memory experiment.

:func:`episode_batch_fn` makes few-shot episodes (targets plus a memory of
other drawings of the same characters, optionally with confounder characters)
as a pure function of `(seed, step)`, like the MNIST pipelines in
:mod:`vma_tf.data.pipelines`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import zipfile
import zlib
from typing import Callable

import numpy as np
import tensorflow as tf

from vma_tf.data.files import DataError, find_file
from vma_tf.data.pipelines import _step_seed

__all__ = [
    "DRAWERS",
    "FEWSHOT_TEST_ALPHABETS",
    "OmniglotSet",
    "episode_batch_fn",
    "fewshot_split",
    "load_fewshot26",
    "load_gmn28",
    "load_learned28",
]

DRAWERS = 20
"""Number of drawings (drawers) per character."""

FEWSHOT_TEST_ALPHABETS: tuple[str, ...] = (
    "Sylheti",
    "Syriac_(Serto)",
    "Tengwar",
    "Tibetan",
    "ULOG",
)
"""Test alphabets of the 45/5 split (the last five evaluation alphabets), as in the csv."""

_FEWSHOT_TEST_CHARACTERS = 144
_NUM_CHARACTERS = 1623
_SET_SIZES: dict[str, int] = {"background": 964, "evaluation": 659}
_LEARNED_TRAIN_DRAWERS = 15
_POOL = 4
_CROP = 104  # 105 -> 104 so that 4x4 pooling tiles the image exactly.
_CHUNK_CHARS = 128  # Characters pooled at once, to bound temporaries.

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True, eq=False)
class OmniglotSet:
    """A set of Omniglot characters with all their drawings.

    Arrays are shared between calls (in-process cache) and therefore read-only.

    Attributes:
        images: uint8 `[C, 20, H, W]` of 0/1, ink = 1; axis 1 is the drawing.
        alphabet: int32 `[C]`, index into `alphabet_names` of each character.
        alphabet_names: Alphabet folder names of the official zips, e.g. ``"Korean"``.
        char_names: ``"<Alphabet>/characterNN"`` of each character, e.g. ``"Korean/character01"``.
    """

    images: np.ndarray
    alphabet: np.ndarray
    alphabet_names: tuple[str, ...]
    char_names: tuple[str, ...]

    @property
    def num_characters(self) -> int:
        """Number of characters C."""
        return int(self.images.shape[0])

    def subset(self, keep: np.ndarray) -> OmniglotSet:
        """Characters selected by a boolean mask, with alphabets re-indexed.

        Args:
            keep: bool `[C]` mask of the characters to keep.

        Returns:
            An `OmniglotSet` whose `alphabet_names` are only the alphabets present,
            in their original order, and whose `alphabet` indexes into them.
        """
        keep = np.asarray(keep, dtype=bool)
        present = np.unique(self.alphabet[keep])  # Sorted, so the original order.
        remap = np.full(len(self.alphabet_names), -1, dtype=np.int32)
        remap[present] = np.arange(present.size, dtype=np.int32)
        return _frozen_set(
            images=self.images[keep],
            alphabet=remap[self.alphabet[keep]],
            alphabet_names=tuple(self.alphabet_names[i] for i in present),
            char_names=tuple(n for n, k in zip(self.char_names, keep) if k),
        )


def _frozen_set(
    images: np.ndarray,
    alphabet: np.ndarray,
    alphabet_names: tuple[str, ...],
    char_names: tuple[str, ...],
) -> OmniglotSet:
    """Build an `OmniglotSet` with C-contiguous, read-only arrays."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    alphabet = np.ascontiguousarray(alphabet, dtype=np.int32)
    images.flags.writeable = False
    alphabet.flags.writeable = False
    return OmniglotSet(images, alphabet, alphabet_names, char_names)


def _index_alphabets(names: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Alphabet indices `[C]` int32 and the names, in order of first appearance."""
    order: dict[str, int] = {}
    for name in names:
        order.setdefault(name, len(order))
    return np.array([order[n] for n in names], dtype=np.int32), tuple(order)


def _resolve(name: str, data_dir: PathLike | None) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns) of a located and verified data file."""
    path = find_file(name, data_dir).resolve()
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


# What a truncated or corrupted .npz raises on reading.
_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def _load_npz_array(path: str, key: str) -> np.ndarray:
    """One array of an ``.npz`` file, with read errors turned into DataError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except _NPZ_ERRORS as exc:
        raise DataError(
            f"{path}: cannot read array {key!r} ({type(exc).__name__}: {exc})"
        ) from exc


def _pool_ink(background: np.ndarray) -> np.ndarray:
    """Crop and max-pool full-resolution images.

    Args:
        background: bool `[N, 20, 105, 105]`, True = white background, False = ink.

    Returns:
        uint8 `[N, 20, 26, 26]`, 1 where any pixel of the 4x4 block of the
        `[:104, :104]` crop is ink.
    """
    n, drawers = background.shape[:2]
    side = _CROP // _POOL
    out = np.empty((n, drawers, side, side), dtype=np.uint8)
    for start in range(0, n, _CHUNK_CHARS):
        ink = ~background[start : start + _CHUNK_CHARS, :, :_CROP, :_CROP]
        blocks = ink.reshape(ink.shape[0], drawers, side, _POOL, side, _POOL)
        out[start : start + _CHUNK_CHARS] = blocks.max(axis=(3, 5))
    return out


def _read_characters_csv(path: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    required = {"set", "row", "char_id", "alphabet", "character"}
    if not rows or not required <= set(rows[0]):
        raise DataError(f"{path}: expected the columns {','.join(sorted(required))}")
    return rows


@functools.lru_cache(maxsize=2)
def _load_fewshot26_cached(
    background: tuple[str, int, int],
    evaluation: tuple[str, int, int],
    characters: tuple[str, int, int],
) -> OmniglotSet:
    """Load and pool both 105x105 sets; cached per (path, size, mtime) of each file."""
    pooled = []
    for (path, _, _), set_name in (
        (background, "background"),
        (evaluation, "evaluation"),
    ):
        images = _load_npz_array(path, "images")
        expected = (_SET_SIZES[set_name], DRAWERS, 105, 105)
        if images.dtype != np.bool_ or images.shape != expected:
            raise DataError(
                f"{path}: images are {images.dtype} {images.shape}, expected bool {expected}"
            )
        pooled.append(_pool_ink(images))
        del images
    rows = _read_characters_csv(characters[0])
    if len(rows) != _NUM_CHARACTERS:
        raise DataError(
            f"{characters[0]}: {len(rows)} rows, expected {_NUM_CHARACTERS}"
        )
    for i, row in enumerate(rows):
        if int(row["char_id"]) != i + 1:
            raise DataError(
                f"{characters[0]}: row {i} has char_id {row['char_id']}, expected {i + 1}"
            )
    alphabet, alphabet_names = _index_alphabets([r["alphabet"] for r in rows])
    return _frozen_set(
        images=np.concatenate(pooled),
        alphabet=alphabet,
        alphabet_names=alphabet_names,
        char_names=tuple(f"{r['alphabet']}/{r['character']}" for r in rows),
    )


def load_fewshot26(data_dir: PathLike | None = None) -> OmniglotSet:
    """All 1623 Omniglot characters at 26x26 with alphabet labels (few-shot experiments).

    As in the paper, the 105x105 originals (``omniglot105_background.npz`` then
    ``omniglot105_evaluation.npz``) are cropped to 104x104 by dropping the last
    row and column and 4x4 max-pooled (a pixel is ink if any of its 16 source
    pixels is). Alphabets and character names come from ``omniglot_characters.csv``.
    The result is cached in-process.

    Args:
        data_dir: An explicit data directory, searched before ``$VMA_DATA_DIR`` and ``./data``.

    Returns:
        An `OmniglotSet` with read-only images uint8 `[1623, 20, 26, 26]` of 0/1
        (ink = 1) and 50 alphabets, characters in global char_id order.

    Raises:
        DataError: If a file is missing, corrupted or not in the expected format.
    """
    return _load_fewshot26_cached(
        _resolve("omniglot105_background.npz", data_dir),
        _resolve("omniglot105_evaluation.npz", data_dir),
        _resolve("omniglot_characters.csv", data_dir),
    )


def fewshot_split(data: OmniglotSet) -> tuple[OmniglotSet, OmniglotSet]:
    """The paper's 45/5 alphabet split for few-shot learning.

    Test alphabets are :data:`FEWSHOT_TEST_ALPHABETS` (144 characters); all 45
    other alphabets are train. Alphabet indices are re-numbered within each part.

    Args:
        data: The full set, e.g. from :func:`load_fewshot26`.

    Returns:
        `(train, test)`.

    Raises:
        ValueError: If a test alphabet is missing or the test set is not 144 characters.
    """
    missing = [a for a in FEWSHOT_TEST_ALPHABETS if a not in data.alphabet_names]
    if missing:
        raise ValueError(
            f"few-shot test alphabets not in the data: {', '.join(missing)}"
        )
    test_ids = [data.alphabet_names.index(a) for a in FEWSHOT_TEST_ALPHABETS]
    is_test = np.isin(data.alphabet, test_ids)
    if int(is_test.sum()) != _FEWSHOT_TEST_CHARACTERS:
        raise ValueError(
            f"the 45/5 split has {int(is_test.sum())} test characters, "
            f"expected {_FEWSHOT_TEST_CHARACTERS}"
        )
    return data.subset(~is_test), data.subset(is_test)


def _load_gmn_set(path: str, set_name: str) -> OmniglotSet:
    """Read one GMN 28x28 file into an `OmniglotSet` (keys sorted)."""
    prefix = f"images_{set_name}/"
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = sorted(npz.files)
            arrays = [npz[k] for k in keys]
    except _NPZ_ERRORS as exc:
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    if len(keys) != _SET_SIZES[set_name]:
        raise DataError(
            f"{path}: {len(keys)} characters, expected {_SET_SIZES[set_name]}"
        )
    char_names = []
    for key, array in zip(keys, arrays):
        parts = key.split("/")
        if not key.startswith(prefix) or len(parts) != 3:
            raise DataError(
                f"{path}: unexpected key {key!r}, expected {prefix}<Alphabet>/characterNN"
            )
        if array.dtype != np.uint8 or array.shape != (DRAWERS, 784):
            raise DataError(
                f"{path}: {key} is {array.dtype} {array.shape}, expected uint8 (20, 784)"
            )
        char_names.append(f"{parts[1]}/{parts[2]}")
    raw = np.stack(arrays)
    if not np.isin(raw, (0, 255)).all():
        raise DataError(f"{path}: found values other than 0 and 255")
    alphabet, alphabet_names = _index_alphabets([n.split("/")[0] for n in char_names])
    return _frozen_set(
        images=(raw == 0).reshape(len(keys), DRAWERS, 28, 28),
        alphabet=alphabet,
        alphabet_names=alphabet_names,
        char_names=tuple(char_names),
    )


@functools.lru_cache(maxsize=2)
def _load_gmn28_cached(
    background: tuple[str, int, int], evaluation: tuple[str, int, int]
) -> tuple[OmniglotSet, OmniglotSet]:
    return (
        _load_gmn_set(background[0], "background"),
        _load_gmn_set(evaluation[0], "evaluation"),
    )


def load_gmn28(data_dir: PathLike | None = None) -> tuple[OmniglotSet, OmniglotSet]:
    """The 28x28 Omniglot of Generative Matching Networks, background/evaluation split.

    Characters are in sorted key order (``<Alphabet>/characterNN``). The 20 rows
    of a character are its 20 drawings, but not in drawer order. Cached in-process.

    Args:
        data_dir: An explicit data directory, searched before ``$VMA_DATA_DIR`` and ``./data``.

    Returns:
        `(train, test)`: the background set (964 characters, 30 alphabets) and the
        evaluation set (659 characters, 20 alphabets), images uint8 `[C, 20, 28, 28]`
        of 0/1 with ink = 1.

    Raises:
        DataError: If a file is missing, corrupted or not in the expected format.
    """
    return _load_gmn28_cached(
        _resolve("omniglot28_background.npz", data_dir),
        _resolve("omniglot28_evaluation.npz", data_dir),
    )


def load_learned28(data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unlabeled 28x28 Omniglot train/test images for the learned-memory experiment.

    This replaces Burda et al.'s ``chardata.mat`` (the paper's 28x28 split with
    24,345 train and 8,070 test images), which is not available offline. Instead,
    all 1623 characters of the GMN 28x28 files (:func:`load_gmn28`, background
    then evaluation) are split by drawing: rows 0..14 of every character are
    train and rows 15..19 are test, giving 24,345 train and 8,115 test images,
    so the test count differs from the paper's 8,070 and the images themselves
    (downscaling, binarization, which drawings are held out) differ too; NLLs
    are therefore not exactly comparable with the paper's numbers.

    Args:
        data_dir: An explicit data directory, searched before ``$VMA_DATA_DIR`` and ``./data``.

    Returns:
        `(train, test)`: read-only uint8 `[1623*15, 28, 28]` and `[1623*5, 28, 28]`
        of 0/1, ink = 1, character-major order (flatten to `[N, 784]` for
        :func:`vma_tf.data.pipelines.epoch_batch_fn`).

    Raises:
        DataError: If a file is missing, corrupted or not in the expected format.
    """
    background, evaluation = load_gmn28(data_dir)
    return _learned_split(background.images, evaluation.images)


def _learned_split(
    background: np.ndarray, evaluation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([background, evaluation])
    side = images.shape[-1]
    train = np.ascontiguousarray(images[:, :_LEARNED_TRAIN_DRAWERS]).reshape(
        -1, side, side
    )
    test = np.ascontiguousarray(images[:, _LEARNED_TRAIN_DRAWERS:]).reshape(
        -1, side, side
    )
    train.flags.writeable = False
    test.flags.writeable = False
    return train, test


def _check_episode_sizes(
    num_chars: int,
    num_drawers: int,
    batch_classes: int,
    targets_per_class: int,
    memory_per_class: int,
    confounder_classes: int,
) -> None:
    """Raise a one-line ValueError naming the flag if the episode sizes are invalid."""
    if batch_classes < 1:
        raise ValueError(f"--batch_classes must be >= 1, got {batch_classes}")
    if targets_per_class < 1:
        raise ValueError(f"--targets_per_class must be >= 1, got {targets_per_class}")
    if memory_per_class < 0:
        raise ValueError(f"--memory_per_class must be >= 0, got {memory_per_class}")
    if confounder_classes < 0:
        raise ValueError(f"--confounder_classes must be >= 0, got {confounder_classes}")
    if targets_per_class + memory_per_class > num_drawers:
        raise ValueError(
            f"--targets_per_class ({targets_per_class}) + --memory_per_class "
            f"({memory_per_class}) must be <= {num_drawers} drawings per character"
        )
    if batch_classes + confounder_classes > num_chars:
        raise ValueError(
            f"--batch_classes ({batch_classes}) + --confounder_classes "
            f"({confounder_classes}) must be <= {num_chars} characters in the split"
        )


def episode_batch_fn(
    images: tf.Tensor,
    alphabet: tf.Tensor,
    batch_classes: int,
    targets_per_class: int,
    memory_per_class: int,
    confounder_classes: int,
    seed: int,
    stream: int,
) -> Callable[[tf.Tensor], dict]:
    """Batch maker for few-shot episodes (paper section 4.2).

    For each step, C + F distinct characters are drawn without replacement, each
    with probability proportional to `1 / (n_alphabets * size of its alphabet)`
    (a random alphabet, then a random character of it), by Gumbel top-k. The
    first C are target classes, the last F confounders. Each character's 20
    drawings are randomly permuted: a target class gives its first T drawings as
    targets and the next Mpc as memory (so a target is never in memory); a
    confounder gives its first Mpc drawings to memory only. Every batch is a pure
    function of `(seed, step)`.

    Args:
        images: uint8 `[N, 20, H, W]` of 0/1.
        alphabet: int `[N]` alphabet index of each character.
        batch_classes: C, target characters per batch.
        targets_per_class: T, targets per target character.
        memory_per_class: Mpc, memory entries per character.
        confounder_classes: F, characters present only in memory.
        seed: run seed.
        stream: random stream id.

    Returns:
        `step -> dict` with float32 `"x"` `[C*T, H, W, 1]` and `"memory"`
        `[(C+F)*Mpc, H, W, 1]`; int32 `"x_label"` `[C*T]` and `"memory_label"`
        `[(C+F)*Mpc]` (character indices into `images`); and int32 `"x_drawer"` /
        `"memory_drawer"` of the same shapes (drawing indices). Rows are
        class-major: target classes in draw order, then confounders.

    Raises:
        ValueError: If `T + Mpc > 20`, `C + F > N` or a size is out of range; the
            message names the command-line flag.
    """
    images = tf.convert_to_tensor(images)
    alphabet = tf.cast(tf.convert_to_tensor(alphabet), tf.int32)
    num_chars, num_drawers = int(images.shape[0]), int(images.shape[1])
    _check_episode_sizes(
        num_chars,
        num_drawers,
        batch_classes,
        targets_per_class,
        memory_per_class,
        confounder_classes,
    )
    if alphabet.shape.rank != 1 or int(alphabet.shape[0]) != num_chars:
        raise ValueError(f"alphabet has shape {alphabet.shape}, expected [{num_chars}]")
    num_classes = batch_classes + confounder_classes
    c, t, mpc = batch_classes, targets_per_class, memory_per_class

    # log p(character) = -log(n_alphabets * |its alphabet|), computed once.
    sizes = tf.math.bincount(alphabet, dtype=tf.float32)  # [A]
    n_alphabets = tf.reduce_sum(tf.cast(sizes > 0, tf.float32))
    log_weights = -tf.math.log(n_alphabets * tf.gather(sizes, alphabet))  # [N]

    def gather(chars: tf.Tensor, drawers: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """`chars` `[K]`, `drawers` `[K, P]` -> images, labels, drawers, flattened."""
        labels = tf.broadcast_to(chars[:, None], tf.shape(drawers))
        pairs = tf.stack([labels, drawers], axis=-1)  # [K, P, 2]
        x = tf.gather_nd(images, pairs)  # [K, P, H, W]
        count = int(drawers.shape[0]) * int(drawers.shape[1])
        x = tf.reshape(tf.cast(x, tf.float32), [count, *images.shape[2:], 1])
        return x, tf.reshape(labels, [count]), tf.reshape(drawers, [count])

    def make(step):
        seed_chars, seed_drawers = tf.unstack(
            tf.random.experimental.stateless_split(_step_seed(seed, stream, step), 2)
        )
        u = tf.random.stateless_uniform(
            [num_chars], seed=seed_chars, minval=np.finfo(np.float32).tiny, maxval=1.0
        )
        gumbel = -tf.math.log(-tf.math.log(u))
        chars = tf.math.top_k(log_weights + gumbel, k=num_classes, sorted=True).indices
        keys = tf.random.stateless_uniform(
            [num_classes, num_drawers], seed=seed_drawers
        )
        perm = tf.math.top_k(keys, k=num_drawers, sorted=True).indices  # [C+F, 20]
        perm = tf.cast(perm, tf.int32)
        x, x_label, x_drawer = gather(chars[:c], perm[:c, :t])
        memory_drawers = tf.concat([perm[:c, t : t + mpc], perm[c:, :mpc]], axis=0)
        memory, memory_label, memory_drawer = gather(chars, memory_drawers)
        return {
            "x": x,
            "memory": memory,
            "x_label": x_label,
            "memory_label": memory_label,
            "x_drawer": x_drawer,
            "memory_drawer": memory_drawer,
        }

    return make
