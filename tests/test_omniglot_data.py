"""Tests for vma_tf.data.omniglot: loaders, splits and the few-shot episode sampler."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from vma_tf.data import omniglot
from vma_tf.data.files import find_file

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shared_data_dir() -> pathlib.Path | None:
    env = os.environ.get("VMA_DATA_DIR")
    for candidate in ([pathlib.Path(env)] if env else []) + [
        REPO_ROOT.parent / "shared" / "data"
    ]:
        if (candidate / "omniglot_characters.csv").is_file():
            return candidate
    return None


SHARED = _shared_data_dir()
pytestmark = pytest.mark.skipif(
    SHARED is None,
    reason="Omniglot data not found: set VMA_DATA_DIR or provide ../shared/data next to the repo",
)


@pytest.fixture(scope="module")
def fewshot() -> omniglot.OmniglotSet:
    return omniglot.load_fewshot26(SHARED)


@pytest.fixture(scope="module")
def split(
    fewshot: omniglot.OmniglotSet,
) -> tuple[omniglot.OmniglotSet, omniglot.OmniglotSet]:
    return omniglot.fewshot_split(fewshot)


def _reference_pool(background: np.ndarray) -> np.ndarray:
    """Slow reference: `[105, 105]` bool (True = background) -> `[26, 26]` 0/1 ink."""
    ink = np.logical_not(background)[:104, :104]
    out = np.zeros((26, 26), dtype=np.uint8)
    for i in range(26):
        for j in range(26):
            block_has_ink = False
            for di in range(4):
                for dj in range(4):
                    if ink[4 * i + di, 4 * j + dj]:
                        block_has_ink = True
            out[i, j] = 1 if block_has_ink else 0
    return out


# ---------------------------------------------------------------- 26x26 few-shot data


def test_fewshot26_matches_slow_reference(fewshot: omniglot.OmniglotSet) -> None:
    picks = {
        "background": [(0, 0), (17, 5), (963, 19)],
        "evaluation": [(0, 3), (400, 11), (658, 19)],
    }
    offset = {"background": 0, "evaluation": 964}
    for set_name, pairs in picks.items():
        path = find_file(f"omniglot105_{set_name}.npz", SHARED)
        with np.load(path, allow_pickle=False) as npz:
            raw = npz["images"]
        for char, drawer in pairs:
            expected = _reference_pool(raw[char, drawer])
            np.testing.assert_array_equal(
                fewshot.images[offset[set_name] + char, drawer],
                expected,
                err_msg=f"{set_name} char {char} drawer {drawer}",
            )
            assert expected.sum() > 0


def test_fewshot26_format(fewshot: omniglot.OmniglotSet) -> None:
    images = fewshot.images
    assert images.shape == (1623, 20, 26, 26)
    assert images.dtype == np.uint8
    assert set(np.unique(images).tolist()) == {0, 1}
    ink = images.mean()
    assert 0.05 < ink < 0.3, ink  # Mostly background, but every drawing has ink.
    assert (images.reshape(1623 * 20, -1).sum(axis=1) > 0).all()
    # Borders are almost always background.
    assert images[:, :, 0, :].mean() < 0.05
    assert not images.flags.writeable
    assert omniglot.load_fewshot26(SHARED) is fewshot  # In-process cache.


def test_fewshot26_labels(fewshot: omniglot.OmniglotSet) -> None:
    assert fewshot.alphabet.dtype == np.int32 and fewshot.alphabet.shape == (1623,)
    assert len(fewshot.alphabet_names) == 50
    assert len(fewshot.char_names) == 1623 == len(set(fewshot.char_names))
    assert fewshot.char_names[0] == "Arcadian/character01"
    for name, a in zip(fewshot.char_names, fewshot.alphabet):
        assert name.split("/")[0] == fewshot.alphabet_names[a]


def test_fewshot_split(fewshot: omniglot.OmniglotSet, split) -> None:
    train, test = split
    assert test.num_characters == 144
    assert train.num_characters + test.num_characters == 1623
    assert set(test.alphabet_names) == set(omniglot.FEWSHOT_TEST_ALPHABETS)
    assert len(test.alphabet_names) == 5 and len(train.alphabet_names) == 45
    assert not set(train.alphabet_names) & set(test.alphabet_names)
    assert not set(train.char_names) & set(test.char_names)
    for part in (train, test):
        assert part.alphabet.min() == 0
        assert part.alphabet.max() == len(part.alphabet_names) - 1
        for name, a in zip(part.char_names, part.alphabet):
            assert name.split("/")[0] == part.alphabet_names[a]
    # Images travel with their character.
    index = {n: i for i, n in enumerate(fewshot.char_names)}
    for part in (train, test):
        for k in (0, part.num_characters // 2, part.num_characters - 1):
            np.testing.assert_array_equal(
                part.images[k], fewshot.images[index[part.char_names[k]]]
            )


# ---------------------------------------------------------------- 28x28 data


def test_gmn28() -> None:
    train, test = omniglot.load_gmn28(SHARED)
    assert train.images.shape == (964, 20, 28, 28)
    assert test.images.shape == (659, 20, 28, 28)
    assert len(train.alphabet_names) == 30 and len(test.alphabet_names) == 20
    assert not set(train.alphabet_names) & set(test.alphabet_names)
    assert list(train.char_names) == sorted(train.char_names)
    for part in (train, test):
        assert part.images.dtype == np.uint8
        assert set(np.unique(part.images).tolist()) == {0, 1}
        assert 0.03 < part.images.mean() < 0.25  # ink = 1 is the minority.
    path = find_file("omniglot28_background.npz", SHARED)
    key = "images_background/" + train.char_names[5]
    with np.load(path, allow_pickle=False) as npz:
        raw = npz[key]
    np.testing.assert_array_equal(
        train.images[5].reshape(20, 784), (raw == 0).astype(np.uint8)
    )


def test_learned28() -> None:
    train, test = omniglot.load_learned28(SHARED)
    assert train.shape == (24345, 28, 28) and test.shape == (8115, 28, 28)
    assert train.dtype == test.dtype == np.uint8
    gmn_train, gmn_test = omniglot.load_gmn28(SHARED)
    np.testing.assert_array_equal(train[:15], gmn_train.images[0, :15])
    np.testing.assert_array_equal(test[:5], gmn_train.images[0, 15:])
    np.testing.assert_array_equal(test[-5:], gmn_test.images[-1, 15:])


# ---------------------------------------------------------------- episode sampler


def _batches(make, start: int, count: int) -> dict[str, np.ndarray]:
    ds = tf.data.Dataset.counter(start).take(count).map(make).batch(count)
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


@pytest.mark.parametrize(
    "c,t,mpc,f",
    [(8, 4, 4, 0), (3, 1, 19, 0), (5, 7, 2, 6), (2, 20, 0, 0), (1, 2, 3, 143)],
)
def test_episode_invariants(split, c: int, t: int, mpc: int, f: int) -> None:
    _, test = split
    images = tf.constant(test.images)
    make = omniglot.episode_batch_fn(
        images, tf.constant(test.alphabet), c, t, mpc, f, seed=3, stream=0
    )
    steps = 64
    b = _batches(make, 10, steps)
    assert b["x"].shape == (steps, c * t, 26, 26, 1) and b["x"].dtype == np.float32
    assert b["memory"].shape == (steps, (c + f) * mpc, 26, 26, 1)
    assert b["memory"].dtype == np.float32
    assert b["x_label"].shape == b["x_drawer"].shape == (steps, c * t)
    assert b["memory_label"].shape == b["memory_drawer"].shape == (steps, (c + f) * mpc)
    for key in ("x_label", "x_drawer", "memory_label", "memory_drawer"):
        assert b[key].dtype == np.int32
    for s in range(steps):
        xl, xd = b["x_label"][s], b["x_drawer"][s]
        ml, md = b["memory_label"][s], b["memory_drawer"][s]
        # Images are the labelled drawings.
        np.testing.assert_array_equal(b["x"][s, ..., 0], test.images[xl, xd])
        np.testing.assert_array_equal(b["memory"][s, ..., 0], test.images[ml, md])
        # C distinct target characters with T distinct drawings each.
        targets = set(zip(xl.tolist(), xd.tolist()))
        assert len(targets) == c * t
        assert len(set(xl.tolist())) == c
        memory = set(zip(ml.tolist(), md.tolist()))
        assert len(memory) == (c + f) * mpc
        assert not targets & memory  # A target is never in memory.
        if mpc:
            assert set(xl.tolist()) <= set(ml.tolist())
            assert len(set(ml.tolist())) == c + f  # Confounders are distinct too.
    # Draws vary across steps.
    assert len({tuple(row) for row in b["x_label"]}) > steps // 2


def test_episode_deterministic(split) -> None:
    train, _ = split
    args = (tf.constant(train.images), tf.constant(train.alphabet), 8, 4, 4, 2)
    make = omniglot.episode_batch_fn(*args, seed=7, stream=0)
    again = omniglot.episode_batch_fn(*args, seed=7, stream=0)
    a, b = make(tf.constant(5, tf.int64)), again(5)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    c = make(6)
    assert not np.array_equal(a["x"].numpy(), c["x"].numpy())
    d = omniglot.episode_batch_fn(*args, seed=8, stream=0)(5)
    assert not np.array_equal(a["x_label"].numpy(), d["x_label"].numpy())
    e = omniglot.episode_batch_fn(*args, seed=7, stream=1)(5)
    assert not np.array_equal(a["x_label"].numpy(), e["x_label"].numpy())
    # The same batches inside tf.data, resumed at any step.
    ds = tf.data.Dataset.counter(5).map(
        make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    first, second = list(ds.take(2))
    np.testing.assert_array_equal(first["x"].numpy(), a["x"].numpy())
    np.testing.assert_array_equal(second["memory"].numpy(), c["memory"].numpy())


def test_episode_alphabet_weighting(split) -> None:
    # Random alphabet, then random character: the five test alphabets (23..42
    # characters) are drawn about equally often, not in proportion to their size.
    _, test = split
    make = omniglot.episode_batch_fn(
        tf.constant(test.images),
        tf.constant(test.alphabet),
        1,
        1,
        0,
        0,
        seed=0,
        stream=0,
    )
    draws = 2000
    labels = _batches(make, 0, draws)["x_label"][:, 0]
    counts = np.bincount(test.alphabet[labels], minlength=5)
    assert np.abs(counts - draws / 5).max() < 80, counts  # sd ~ 18.
    # Within an alphabet, characters are uniform: all get drawn.
    assert len(np.unique(labels)) > 130


@pytest.mark.parametrize(
    "c,t,mpc,f,flag",
    [
        (8, 17, 4, 0, "--targets_per_class"),
        (8, 4, 17, 0, "--memory_per_class"),
        (145, 4, 4, 0, "--batch_classes"),
        (8, 4, 4, 137, "--confounder_classes"),
        (0, 4, 4, 0, "--batch_classes"),
        (8, 0, 4, 0, "--targets_per_class"),
        (8, 4, -1, 0, "--memory_per_class"),
        (8, 4, 4, -1, "--confounder_classes"),
    ],
)
def test_episode_bad_sizes(split, c: int, t: int, mpc: int, f: int, flag: str) -> None:
    _, test = split
    with pytest.raises(ValueError, match=flag) as info:
        omniglot.episode_batch_fn(
            tf.constant(test.images),
            tf.constant(test.alphabet),
            c,
            t,
            mpc,
            f,
            seed=0,
            stream=0,
        )
    assert "\n" not in str(info.value)
