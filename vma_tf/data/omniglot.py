"""Omniglot for the few-shot and learned-memory experiments (paper section 4.2).

Four views of Lake et al.'s Omniglot (1623 characters from 50 alphabets, each
drawn by 20 people), all with ink = 1, each served by a tfds builder of
:mod:`vma_tf.data.omniglot_builders` (prepared once by
:func:`vma_tf.data.tfds_data.prepare`):

* :func:`load_fewshot26`: the full-resolution 105x105 images cropped to 104x104
  and 4x4 max-pooled to 26x26, with alphabet labels, in the paper's 45/5
  alphabet split (144 test characters).
* :func:`load_gmn28`: the 28x28 copy from Generative Matching Networks, split
  into the official background (train) and evaluation (test) sets.
* :func:`load_bgeval26`: the full-resolution images resized to 26x26 by
  nearest-neighbour sampling, in the background/evaluation split (the data of
  the public PyTorch VMA).
* :func:`load_learned28`: an unlabeled 28x28 train/test split by drawer for the
  learned-memory experiment.

:func:`episode_batch_fn` makes few-shot episodes (targets plus a memory of
other drawings of the same characters, optionally with confounder characters)
as a pure function of `(seed, step)`, like the MNIST pipelines in
:mod:`vma_tf.data.pipelines`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from vma_tf.data import tfds_data
from vma_tf.data.files import PathLike
from vma_tf.data.omniglot_builders import DRAWERS, FEWSHOT_TEST_ALPHABETS
from vma_tf.data.pipelines import _step_seed

__all__ = [
    "DRAWERS",
    "FEWSHOT_TEST_ALPHABETS",
    "OmniglotSet",
    "episode_batch_fn",
    "load_bgeval26",
    "load_fewshot26",
    "load_gmn28",
    "load_learned28",
    "with_rotations",
]


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


def with_rotations(split: OmniglotSet) -> OmniglotSet:
    """`split` with every character also rotated by 90, 180 and 270 degrees
    (counter-clockwise), as three more characters of three more alphabets.

    Class augmentation as in Santoro et al. (2016) and Vinyals et al. (2016):
    a rotated character is a new character; each rotation of an alphabet is a
    new alphabet, so the episode sampler's alphabet-then-character draw sees
    four times the alphabets, each of its original size.

    Args:
        split: C characters of A alphabets.

    Returns:
        4C characters of 4A alphabets: the C as they are (same order), then
        the C rotated by 90, then by 180, then by 270 degrees. Alphabet
        `k * A + i` is alphabet `i` rotated by `90 k` degrees, named
        `"<name>@<90 k>"`; character names likewise.
    """
    num_alphabets = len(split.alphabet_names)
    images, alphabet = [split.images], [split.alphabet]
    alphabet_names, char_names = [split.alphabet_names], [split.char_names]
    for k in (1, 2, 3):
        images.append(np.rot90(split.images, k, axes=(2, 3)))
        alphabet.append(split.alphabet + k * num_alphabets)
        alphabet_names.append(tuple(f"{n}@{90 * k}" for n in split.alphabet_names))
        char_names.append(tuple(f"{n}@{90 * k}" for n in split.char_names))
    return _frozen_set(
        np.concatenate(images),
        np.concatenate(alphabet),
        sum(alphabet_names, ()),
        sum(char_names, ()),
    )


def _index_alphabets(names: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Alphabet indices `[C]` int32 and the names, in order of first appearance."""
    order: dict[str, int] = {}
    for name in names:
        order.setdefault(name, len(order))
    return np.array([order[n] for n in names], dtype=np.int32), tuple(order)


def _character_set(records: dict[str, np.ndarray]) -> OmniglotSet:
    """An `OmniglotSet` from the records of a per-character builder split."""
    alphabets = [a.decode() for a in records["alphabet"]]
    alphabet, alphabet_names = _index_alphabets(alphabets)
    return _frozen_set(
        images=records["images"],
        alphabet=alphabet,
        alphabet_names=alphabet_names,
        char_names=tuple(
            f"{a}/{c.decode()}" for a, c in zip(alphabets, records["character"])
        ),
    )


_LOADED: dict[tuple[str, str], tuple] = {}


def _load(dataset: str, data_dir: PathLike | None, make: Callable) -> tuple:
    """`(make(train records), make(test records))`, prepared if needed and cached
    in-process per (dataset, cache directory)."""
    key = (dataset, str(tfds_data.cache_dir()))
    if key not in _LOADED:
        prepared = tfds_data.prepare(dataset, data_dir)
        _LOADED[key] = tuple(
            make(tfds_data.read_split(prepared, split)) for split in ("train", "test")
        )
    return _LOADED[key]


def load_fewshot26(data_dir: PathLike | None = None) -> tuple[OmniglotSet, OmniglotSet]:
    """26x26 Omniglot with alphabet labels in the paper's 45/5 alphabet split.

    Served by :class:`vma_tf.data.omniglot_builders.OmniglotFewshot26` (105x105
    originals cropped to 104x104 and 4x4 max-pooled). Cached in-process.

    Args:
        data_dir: An explicit raw-data directory, searched before
            ``$VMA_DATA_DIR`` and ``./data`` when the dataset is not yet prepared.

    Returns:
        `(train, test)`: 1479 characters of 45 alphabets and the 144 characters
        of :data:`FEWSHOT_TEST_ALPHABETS`, each in global character id order,
        read-only images uint8 `[C, 20, 26, 26]` of 0/1 (ink = 1); alphabets
        are numbered within each part in order of appearance.

    Raises:
        DataError: If a raw file is missing, corrupted or truncated.
    """
    return _load("omniglot_fewshot", data_dir, _character_set)


def load_gmn28(data_dir: PathLike | None = None) -> tuple[OmniglotSet, OmniglotSet]:
    """The 28x28 Omniglot of Generative Matching Networks, background/evaluation split.

    Served by :class:`vma_tf.data.omniglot_builders.OmniglotGmn28`. Characters
    are in sorted key order (``<Alphabet>/characterNN``). The 20 rows of a
    character are its 20 drawings, but not in drawer order. Cached in-process.

    Args:
        data_dir: As for :func:`load_fewshot26`.

    Returns:
        `(train, test)`: the background set (964 characters, 30 alphabets) and the
        evaluation set (659 characters, 20 alphabets), images uint8 `[C, 20, 28, 28]`
        of 0/1 with ink = 1.

    Raises:
        DataError: If a raw file is missing, corrupted or truncated.
    """
    return _load("omniglot_gmn", data_dir, _character_set)


def load_bgeval26(data_dir: PathLike | None = None) -> tuple[OmniglotSet, OmniglotSet]:
    """26x26 nearest-neighbour Omniglot, background/evaluation split.

    The data of the public PyTorch VMA (torchvision's ``Omniglot`` resized with
    ``Image.NEAREST``), the second anchor of Table 1. Served by
    :class:`vma_tf.data.omniglot_builders.OmniglotBgEval26`; cached in-process.

    Args:
        data_dir: As for :func:`load_fewshot26`.

    Returns:
        `(train, test)`: the background set (964 characters, 30 alphabets) and the
        evaluation set (659 characters, 20 alphabets), each in global character
        id order, read-only images uint8 `[C, 20, 26, 26]` of 0/1 (ink = 1).

    Raises:
        DataError: If a raw file is missing, corrupted or truncated.
    """
    return _load("omniglot_bgeval", data_dir, _character_set)


def _read_only_images(records: dict[str, np.ndarray]) -> np.ndarray:
    images = np.ascontiguousarray(records["image"])
    images.flags.writeable = False
    return images


def load_learned28(data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unlabeled 28x28 Omniglot train/test images for the learned-memory experiment.

    This replaces Burda et al.'s ``chardata.mat`` (the paper's 28x28 split with
    24,345 train and 8,070 test images), which is not available offline. Instead,
    all 1623 characters of the GMN 28x28 files (as in :func:`load_gmn28`, background
    then evaluation) are split by drawing: rows 0..14 of every character are
    train and rows 15..19 are test, giving 24,345 train and 8,115 test images,
    so the test count differs from the paper's 8,070 and the images themselves
    (downscaling, binarization, which drawings are held out) differ too; NLLs
    are therefore not exactly comparable with the paper's numbers. Served by
    :class:`vma_tf.data.omniglot_builders.OmniglotLearned28`; cached in-process.

    Args:
        data_dir: As for :func:`load_fewshot26`.

    Returns:
        `(train, test)`: read-only uint8 `[1623*15, 28, 28]` and `[1623*5, 28, 28]`
        of 0/1, ink = 1, character-major order (flatten to `[N, 784]` for
        :func:`vma_tf.data.pipelines.epoch_batch_fn`).

    Raises:
        DataError: If a raw file is missing, corrupted or truncated.
    """
    return _load("omniglot_learned", data_dir, _read_only_images)


def _check_episode_sizes(
    num_chars: int,
    num_drawers: int,
    batch_classes: int,
    targets_per_class: int,
    memory_per_class: int,
    confounder_classes: int,
    absent_classes: int,
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
    if not 0 <= absent_classes <= batch_classes:
        raise ValueError(
            f"--absent_classes must be in [0, --batch_classes={batch_classes}], "
            f"got {absent_classes}"
        )
    if targets_per_class + memory_per_class > num_drawers:
        raise ValueError(
            f"--targets_per_class ({targets_per_class}) + --memory_per_class "
            f"({memory_per_class}) must be <= {num_drawers} drawings per character"
        )
    if batch_classes + confounder_classes + absent_classes > num_chars:
        raise ValueError(
            f"--batch_classes ({batch_classes}) + --confounder_classes "
            f"({confounder_classes}) + --absent_classes ({absent_classes}) must be "
            f"<= {num_chars} characters in the split"
        )


def _check_episode_alphabets(
    episode_alphabets: int, sizes: np.ndarray, num_classes: int
) -> None:
    """Raise a one-line ValueError naming the flag unless every choice of
    `episode_alphabets` alphabets (of sizes `sizes`) holds `num_classes`
    characters."""
    if episode_alphabets < 0:
        raise ValueError(f"--episode_alphabets must be >= 0, got {episode_alphabets}")
    if not episode_alphabets:
        return
    sizes = np.sort(sizes[sizes > 0])
    if episode_alphabets > len(sizes):
        raise ValueError(
            f"--episode_alphabets={episode_alphabets} exceeds the split's "
            f"{len(sizes)} alphabets"
        )
    if sizes[:episode_alphabets].sum() < num_classes:
        raise ValueError(
            f"--episode_alphabets={episode_alphabets}: the smallest "
            f"{episode_alphabets} alphabets hold {sizes[:episode_alphabets].sum()} "
            f"characters, fewer than the episode's {num_classes}; choose more"
        )


def _restrict_to_alphabets(alphabet, sizes, count: int, seed):
    """Log-weights `[N]` of the characters of `count` alphabets drawn
    uniformly without replacement: -log(count * |its alphabet|) within them,
    -inf for the others' characters."""
    gumbel = _gumbel(tf.shape(sizes), tf.random.experimental.stateless_fold_in(seed, 1))
    keys = tf.where(sizes > 0, gumbel, -np.inf)  # [A]
    chosen = tf.math.top_k(keys, k=count).indices
    mask = tf.reduce_any(tf.equal(alphabet[:, None], chosen[None, :]), axis=1)
    within = -tf.math.log(float(count) * tf.gather(sizes, alphabet))
    return tf.where(mask, within, -np.inf)


def _gumbel(shape, seed) -> tf.Tensor:
    """Standard Gumbel noise of `shape` (stateless in `seed`), for top-k draws
    without replacement."""
    u = tf.random.stateless_uniform(
        shape, seed=seed, minval=np.finfo(np.float32).tiny, maxval=1.0
    )
    return -tf.math.log(-tf.math.log(u))


_COMPOSITION_TRIES = 32


def _memory_counts(seed, n: int, per: int, cap: int) -> tf.Tensor:
    """Random memory rows per character: int32 `[n]` counts summing to
    `n * per`, each in `[1, cap]`, uniformly among all such splits
    (stateless in `seed`; needs `per <= cap`).

    A uniform random composition of `n * per` into `n` positive parts (`n - 1`
    distinct cut points among the `n * per - 1` gaps, uniformly): with the
    few-shot sizes (8 characters, 4 rows each on average) a character has one
    row in memory in 23 % of episodes, two in 18 %, four or more in 45 %. Of
    `_COMPOSITION_TRIES` compositions drawn at once, the first within `cap` is
    kept: uniform among those within `cap`. If none is (likely only when `per`
    is near `cap`: 8 characters of 16 rows, cap 19), one is drawn from that
    same distribution exactly, character by character
    (`_uniform_capped_counts`), so the draw stays uniform whatever the sizes.
    """
    total = n * per
    if n == 1:
        return tf.constant([total], tf.int32)
    tries = _COMPOSITION_TRIES
    keys = tf.random.stateless_uniform([tries, total - 1], seed=seed)
    cuts = tf.sort(tf.math.top_k(keys, k=n - 1).indices + 1, axis=-1)
    bounds = tf.concat(
        [tf.zeros([tries, 1], tf.int32), cuts, tf.fill([tries, 1], total)], axis=-1
    )
    counts = bounds[:, 1:] - bounds[:, :-1]  # [R, n], each >= 1, sum total
    fits = tf.reduce_all(counts <= cap, axis=-1)  # [R]
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    return tf.cond(
        tf.reduce_any(fits),
        lambda: counts[first],
        lambda: _uniform_capped_counts(seed, n, per, cap),
    )


def _capped_compositions(n: int, total: int, cap: int) -> np.ndarray:
    """`log N[k, r]` for `k <= n`, `r <= total`: the log of the number of
    ways to split `r` rows among `k` characters with 1 to `cap` rows each
    (`-inf`: none), by `N[k, r] = sum_{j=1..cap} N[k - 1, r - j]`.

    Returns:
        float64 `[n + 1, total + 1]`.
    """
    log_n = np.full((n + 1, total + 1), -np.inf)
    log_n[0, 0] = 0.0
    for k in range(1, n + 1):
        for r in range(k, min(total, k * cap) + 1):
            parts = np.arange(1, min(cap, r - k + 1) + 1)
            log_n[k, r] = np.logaddexp.reduce(log_n[k - 1, r - parts])
    return log_n


def _uniform_capped_counts(seed, n: int, per: int, cap: int) -> tf.Tensor:
    """`_memory_counts`' exact draw: with `r` rows left for `k` characters,
    the next takes `j` with probability `N[k - 1, r - j] / N[k, r]`
    (`_capped_compositions`), so every split within `cap` has probability
    `1 / N[n, n * per]`. int32 `[n]`, stateless in `seed`."""
    total = n * per
    log_n = _capped_compositions(n, total, cap)
    logits = np.full((n + 1, total + 1, cap), -np.inf, np.float32)
    for j in range(1, cap + 1):  # logits[k, r, j - 1] = log N[k - 1, r - j]
        logits[1:, j:, j - 1] = log_n[:-1, : total + 1 - j]
    table = tf.constant(logits)
    rest = tf.constant(total, tf.int32)
    counts = []
    for i in range(n):
        row = tf.gather(table[n - i], rest)[None]  # [1, cap]
        part_seed = tf.random.experimental.stateless_fold_in(seed, i)
        draw = tf.random.stateless_categorical(row, 1, seed=part_seed, dtype=tf.int32)
        take = draw[0, 0] + 1  # Column j - 1 is j rows.
        counts.append(take)
        rest -= take
    return tf.stack(counts)


def _gather_drawings(images, chars: tf.Tensor, drawers: tf.Tensor):
    """`chars` `[K]`, `drawers` `[K, P]` -> float32 images `[K*P, H, W, 1]`,
    int32 labels `[K*P]` and drawers `[K*P]`."""
    labels = tf.broadcast_to(chars[:, None], tf.shape(drawers))
    pairs = tf.stack([labels, drawers], axis=-1)  # [K, P, 2]
    x = tf.gather_nd(images, pairs)  # [K, P, H, W]
    count = int(drawers.shape[0]) * int(drawers.shape[1])
    x = tf.reshape(tf.cast(x, tf.float32), [count, *images.shape[2:], 1])
    return x, tf.reshape(labels, [count]), tf.reshape(drawers, [count])


def episode_batch_fn(
    images: tf.Tensor,
    alphabet: tf.Tensor,
    batch_classes: int,
    targets_per_class: int,
    memory_per_class: int,
    confounder_classes: int,
    seed: int,
    stream: int,
    absent_classes: int = 0,
    episode_alphabets: int = 0,
    mixed_memory: bool = False,
) -> Callable[[tf.Tensor], dict]:
    """Batch maker for few-shot episodes (paper section 4.2).

    For each step, C + F + A distinct characters are drawn without replacement, each
    with probability proportional to `1 / (n_alphabets * size of its alphabet)`
    (a random alphabet, then a random character of it), by Gumbel top-k. The
    first C are target classes, the last F confounders. Each character's 20
    drawings are randomly permuted: a target class gives its first T drawings as
    targets and the next Mpc as memory (so a target is never in memory); a
    confounder gives its first Mpc drawings to memory only. With A absent
    classes, the last A target classes give no drawings to memory and A more
    characters are drawn as confounders in their place (same memory size): their
    targets must be generated without a drawing of their own character in
    memory, as the first drawing of a character in a Table 1 sequence is. With
    L episode alphabets, each episode first draws L distinct alphabets
    uniformly and then its characters from those alone (a random one of the L
    alphabets, then a random character of it): L = 1 is Lake et al.'s
    within-alphabet episode. With `mixed_memory`, the memory keeps its
    `(C+F)*Mpc` rows but each episode splits them among its memory characters
    at random (see `_memory_counts`): a target's character may have one
    drawing in memory or many, as Table 1's sequences have 1 to 19. Every
    batch is a pure function of `(seed, step)`; A = 0, L = 0 and no
    `mixed_memory` give the batches of before these options existed.

    Args:
        images: uint8 `[N, 20, H, W]` of 0/1.
        alphabet: int `[N]` alphabet index of each character.
        batch_classes: C, target characters per batch.
        targets_per_class: T, targets per target character.
        memory_per_class: Mpc, memory entries per character.
        confounder_classes: F, characters present only in memory.
        seed: run seed.
        stream: random stream id.
        absent_classes: A, target characters with no drawing in memory.
        episode_alphabets: L, alphabets each episode draws its characters
            from (0: every alphabet of the split).
        mixed_memory: split the memory rows among the memory characters at
            random instead of Mpc each.

    Returns:
        `step -> dict` with float32 `"x"` `[C*T, H, W, 1]` and `"memory"`
        `[(C+F)*Mpc, H, W, 1]`; int32 `"x_label"` `[C*T]` and `"memory_label"`
        `[(C+F)*Mpc]` (character indices into `images`); and int32 `"x_drawer"` /
        `"memory_drawer"` of the same shapes (drawing indices). Rows are
        class-major: target classes in draw order, then confounders (memory:
        the C - A present target classes, then the F + A confounders).

    Raises:
        ValueError: If `T + Mpc > 20`, `C + F + A > N`, some L alphabets hold
            fewer than `C + F + A` characters or a size is out of range; the
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
        absent_classes,
    )
    if alphabet.shape.rank != 1 or int(alphabet.shape[0]) != num_chars:
        raise ValueError(f"alphabet has shape {alphabet.shape}, expected [{num_chars}]")
    num_classes = batch_classes + confounder_classes + absent_classes
    c, t, mpc = batch_classes, targets_per_class, memory_per_class
    present = batch_classes - absent_classes

    # log p(character) = -log(n_alphabets * |its alphabet|), computed once.
    sizes = tf.math.bincount(alphabet, dtype=tf.float32)  # [A]
    _check_episode_alphabets(
        episode_alphabets, sizes.numpy().astype(np.int64), num_classes
    )
    n_alphabets = tf.reduce_sum(tf.cast(sizes > 0, tf.float32))
    log_weights = -tf.math.log(n_alphabets * tf.gather(sizes, alphabet))  # [N]

    gather = lambda chars, drawers: _gather_drawings(images, chars, drawers)
    n_memory_chars = c + confounder_classes  # absent targets replaced by others

    def make(step):
        seed_chars, seed_drawers = tf.unstack(
            tf.random.experimental.stateless_split(_step_seed(seed, stream, step), 2)
        )
        gumbel = _gumbel([num_chars], seed_chars)
        weights = log_weights
        if episode_alphabets:
            weights = _restrict_to_alphabets(
                alphabet, sizes, episode_alphabets, seed_chars
            )
        chars = tf.math.top_k(weights + gumbel, k=num_classes, sorted=True).indices
        keys = tf.random.stateless_uniform(
            [num_classes, num_drawers], seed=seed_drawers
        )
        perm = tf.math.top_k(keys, k=num_drawers, sorted=True).indices  # [C+F, 20]
        perm = tf.cast(perm, tf.int32)
        x, x_label, x_drawer = gather(chars[:c], perm[:c, :t])
        memory_chars = tf.concat([chars[:present], chars[c:]], axis=0)
        if mixed_memory:
            # Each memory character's drawings not used as targets, in order.
            unused = tf.concat(
                [perm[:present, t:], perm[c:, : num_drawers - t]], axis=0
            )  # [C+F, 20-T]: confounders too give at most 20-T
            counts = _memory_counts(
                tf.random.experimental.stateless_fold_in(seed_drawers, 1),
                n_memory_chars,
                mpc,
                cap=num_drawers - t,
            )
            rows = tf.range(n_memory_chars * mpc)  # [|M|]
            ends = tf.cumsum(counts)
            row = tf.searchsorted(ends, rows, side="right")  # character of a row
            slot = rows - tf.gather(ends - counts, row)  # its place among them
            drawers = tf.gather_nd(unused, tf.stack([row, slot], axis=-1))
            memory, memory_label, memory_drawer = gather(
                tf.gather(memory_chars, row), drawers[:, None]
            )
        else:
            memory_drawers = tf.concat(
                [perm[:present, t : t + mpc], perm[c:, :mpc]], axis=0
            )
            memory, memory_label, memory_drawer = gather(memory_chars, memory_drawers)
        return {
            "x": x,
            "memory": memory,
            "x_label": x_label,
            "memory_label": memory_label,
            "x_drawer": x_drawer,
            "memory_drawer": memory_drawer,
        }

    return make
