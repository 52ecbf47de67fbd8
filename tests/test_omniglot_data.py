"""Tests for vma_tf.data.omniglot: loaders (served by tfds, equal to arrays
built straight from the raw files), splits and the few-shot episode sampler."""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from vma_tf.data import omniglot

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
def split() -> tuple[omniglot.OmniglotSet, omniglot.OmniglotSet]:
    return omniglot.load_fewshot26(SHARED)


def _npz(name: str, key: str) -> np.ndarray:
    assert SHARED is not None
    with np.load(SHARED / name, allow_pickle=False) as npz:
        return npz[key]


def _assert_sets_equal(got: omniglot.OmniglotSet, expected: dict) -> None:
    """Exact equality, values and dtypes, with arrays built from the raw files."""
    np.testing.assert_array_equal(got.images, expected["images"], strict=True)
    np.testing.assert_array_equal(got.alphabet, expected["alphabet"], strict=True)
    assert got.alphabet_names == expected["alphabet_names"]
    assert got.char_names == expected["char_names"]
    assert got.images.flags.c_contiguous and not got.images.flags.writeable


def _labelled(images, alphabets, characters) -> dict:
    """`OmniglotSet` fields, alphabets numbered in order of first appearance."""
    names = tuple(dict.fromkeys(alphabets))
    return {
        "images": images,
        "alphabet": np.array([names.index(a) for a in alphabets], np.int32),
        "alphabet_names": names,
        "char_names": tuple(f"{a}/{c}" for a, c in zip(alphabets, characters)),
    }


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


def test_fewshot26_equals_raw_files(split) -> None:
    """Both splits equal the raw 105x105 images pooled here, in global id order."""
    pooled = []
    for set_name in ("background", "evaluation"):
        raw = _npz(f"omniglot105_{set_name}.npz", "images")  # bool, True = background
        ink = ~raw[:, :, :104, :104]
        pooled.append(
            ink.reshape(len(raw), 20, 26, 4, 26, 4).any(axis=(3, 5)).astype(np.uint8)
        )
        del raw, ink
    images = np.concatenate(pooled)
    with open(SHARED / "omniglot_characters.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["char_id"]) for r in rows] == list(range(1, 1624))
    is_test = np.array([r["alphabet"] in omniglot.FEWSHOT_TEST_ALPHABETS for r in rows])
    for part, keep in zip(split, (~is_test, is_test)):
        kept = [r for r, k in zip(rows, keep) if k]
        _assert_sets_equal(
            part,
            _labelled(
                images[keep],
                [r["alphabet"] for r in kept],
                [r["character"] for r in kept],
            ),
        )
    # Spot checks against a slow per-pixel reference.
    train, test = split
    np.testing.assert_array_equal(
        train.images[17, 5],
        _reference_pool(_npz("omniglot105_background.npz", "images")[17, 5]),
    )
    np.testing.assert_array_equal(
        test.images[-1, 19],
        _reference_pool(_npz("omniglot105_evaluation.npz", "images")[658, 19]),
    )


def test_fewshot26_format(split) -> None:
    images = np.concatenate([part.images for part in split])
    assert images.shape == (1623, 20, 26, 26)
    assert images.dtype == np.uint8
    assert set(np.unique(images).tolist()) == {0, 1}
    ink = images.mean()
    assert 0.05 < ink < 0.3, ink  # Mostly background, but every drawing has ink.
    assert (images.reshape(1623 * 20, -1).sum(axis=1) > 0).all()
    # Borders are almost always background.
    assert images[:, :, 0, :].mean() < 0.05
    assert omniglot.load_fewshot26(SHARED) is split  # In-process cache.
    assert split[0].char_names[0] == "Arcadian/character01"


def test_fewshot_split(split) -> None:
    train, test = split
    assert test.num_characters == 144
    assert train.num_characters + test.num_characters == 1623
    assert set(test.alphabet_names) == set(omniglot.FEWSHOT_TEST_ALPHABETS)
    assert len(test.alphabet_names) == 5 and len(train.alphabet_names) == 45
    assert not set(train.alphabet_names) & set(test.alphabet_names)
    assert not set(train.char_names) & set(test.char_names)
    for part in (train, test):
        assert part.alphabet.dtype == np.int32
        assert part.alphabet.min() == 0
        assert part.alphabet.max() == len(part.alphabet_names) - 1
        for name, a in zip(part.char_names, part.alphabet):
            assert name.split("/")[0] == part.alphabet_names[a]


# ---------------------------------------------------------------- 28x28 data


def test_bgeval26_equals_pil_nearest_resizing() -> None:
    """The public PyTorch VMA's data: torchvision's Omniglot resized with
    PIL's NEAREST to 26x26, background set to train, evaluation set to test,
    characters in global id order."""
    from PIL import Image

    with open(SHARED / "omniglot_characters.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for part, set_name in zip(
        omniglot.load_bgeval26(SHARED), ("background", "evaluation")
    ):
        raw = _npz(f"omniglot105_{set_name}.npz", "images")  # bool, True = background
        kept = [r for r in rows if r["set"] == set_name]
        expected = (~raw[:, :, 2::4, 2::4]).astype(np.uint8)
        _assert_sets_equal(
            part,
            _labelled(
                expected,
                [r["alphabet"] for r in kept],
                [r["character"] for r in kept],
            ),
        )
        # Spot checks against PIL itself (as torchvision calls it: mode L,
        # ink dark), then ToTensor and 1 - x.
        for c, d in ((0, 0), (17, 5), (len(raw) - 1, 19)):
            page = Image.fromarray(raw[c, d].astype(np.uint8) * 255, mode="L")
            small = np.asarray(page.resize((26, 26), Image.NEAREST))
            np.testing.assert_array_equal(
                part.images[c, d], (small == 0).astype(np.uint8)
            )
        del raw


def _raw_gmn28(set_name: str) -> dict:
    assert SHARED is not None
    with np.load(SHARED / f"omniglot28_{set_name}.npz", allow_pickle=False) as npz:
        keys = sorted(npz.files)
        raw = np.stack([npz[k] for k in keys])  # uint8 [C, 20, 784] of 0/255
    parts = [k.split("/") for k in keys]
    assert all(p[0] == f"images_{set_name}" for p in parts)
    images = (raw == 0).astype(np.uint8).reshape(len(keys), 20, 28, 28)
    return _labelled(images, [p[1] for p in parts], [p[2] for p in parts])


def test_gmn28_equals_raw_files() -> None:
    train, test = omniglot.load_gmn28(SHARED)
    assert train.images.shape == (964, 20, 28, 28)
    assert test.images.shape == (659, 20, 28, 28)
    assert len(train.alphabet_names) == 30 and len(test.alphabet_names) == 20
    assert list(train.char_names) == sorted(train.char_names)
    _assert_sets_equal(train, _raw_gmn28("background"))
    _assert_sets_equal(test, _raw_gmn28("evaluation"))
    for part in (train, test):
        assert 0.03 < part.images.mean() < 0.25  # ink = 1 is the minority.


def test_learned28_equals_raw_files() -> None:
    train, test = omniglot.load_learned28(SHARED)
    assert train.shape == (24345, 28, 28) and test.shape == (8115, 28, 28)
    images = np.concatenate(
        [_raw_gmn28(s)["images"] for s in ("background", "evaluation")]
    )
    np.testing.assert_array_equal(
        train, images[:, :15].reshape(-1, 28, 28), strict=True
    )
    np.testing.assert_array_equal(test, images[:, 15:].reshape(-1, 28, 28), strict=True)
    assert not train.flags.writeable and not test.flags.writeable


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


@pytest.mark.parametrize(
    "c,t,mpc,f,a", [(8, 4, 4, 0, 2), (3, 2, 5, 1, 3), (4, 1, 1, 0, 1)]
)
def test_episode_absent_classes(
    split, c: int, t: int, mpc: int, f: int, a: int
) -> None:
    # The last A target characters have no drawing in memory; A more
    # confounders keep the memory size; A = 0 reproduces the batches of before.
    _, test = split
    args = (tf.constant(test.images), tf.constant(test.alphabet), c, t, mpc, f)
    steps = 32
    b = _batches(
        omniglot.episode_batch_fn(*args, seed=3, stream=0, absent_classes=a), 10, steps
    )
    assert b["x"].shape == (steps, c * t, 26, 26, 1)
    assert b["memory"].shape == (steps, (c + f) * mpc, 26, 26, 1)
    for s in range(steps):
        xl, ml, md = b["x_label"][s], b["memory_label"][s], b["memory_drawer"][s]
        np.testing.assert_array_equal(b["memory"][s, ..., 0], test.images[ml, md])
        chars = list(dict.fromkeys(xl.tolist()))  # Target characters, draw order.
        assert len(chars) == c
        assert set(chars[: c - a]) <= set(ml.tolist())
        assert not set(chars[c - a :]) & set(ml.tolist())
        assert len(set(ml.tolist())) == c - a + f + a
        assert len(set(zip(ml.tolist(), md.tolist()))) == (c + f) * mpc
    before = _batches(omniglot.episode_batch_fn(*args, seed=3, stream=0), 10, 4)
    same = _batches(
        omniglot.episode_batch_fn(*args, seed=3, stream=0, absent_classes=0), 10, 4
    )
    for key in before:
        np.testing.assert_array_equal(before[key], same[key])


@pytest.mark.parametrize(
    "c,t,mpc,f,a", [(8, 4, 4, 0, 0), (3, 2, 5, 1, 1), (2, 15, 5, 0, 0), (1, 1, 7, 0, 0)]
)
def test_episode_mixed_memory(split, c: int, t: int, mpc: int, f: int, a: int) -> None:
    # The memory keeps its (C+F)*Mpc rows, split at random among the memory
    # characters: each has at least one, at most the 20 - T drawings its
    # targets leave, never a target's drawing; the targets are the episodes'
    # without the option (same characters, same drawings).
    _, test = split
    args = (tf.constant(test.images), tf.constant(test.alphabet), c, t, mpc, f)
    steps = 64
    kw = {"seed": 3, "stream": 0, "absent_classes": a}
    b = _batches(omniglot.episode_batch_fn(*args, **kw, mixed_memory=True), 10, steps)
    plain = _batches(omniglot.episode_batch_fn(*args, **kw), 10, steps)
    size = (c + f) * mpc
    assert b["memory"].shape == (steps, size, 26, 26, 1)
    for key in ("x", "x_label", "x_drawer"):
        np.testing.assert_array_equal(b[key], plain[key])
    counts = []
    for s in range(steps):
        xl, xd = b["x_label"][s], b["x_drawer"][s]
        ml, md = b["memory_label"][s], b["memory_drawer"][s]
        np.testing.assert_array_equal(b["memory"][s, ..., 0], test.images[ml, md])
        assert len(set(zip(ml.tolist(), md.tolist()))) == size
        assert not set(zip(xl.tolist(), xd.tolist())) & set(
            zip(ml.tolist(), md.tolist())
        )
        # The same memory characters as without the option, class-major.
        chars = list(dict.fromkeys(ml.tolist()))
        assert chars == list(dict.fromkeys(plain["memory_label"][s].tolist()))
        n = np.array([np.sum(ml == ch) for ch in chars])
        assert n.min() >= 1 and n.max() <= 20 - t and n.sum() == size
        assert np.count_nonzero(np.diff(ml)) == len(chars) - 1  # Contiguous.
        counts.append(n)
    counts = np.stack(counts)
    if c + f > 1 and 1 < mpc < 20 - t:  # Mixed: not Mpc each, varying by episode.
        assert np.mean(counts != mpc) > 0.5
        assert np.mean(counts == 1) > 0.05
        assert len({tuple(n) for n in counts}) > steps // 2


def _by_seed(make, first: int, draws: int) -> np.ndarray:
    """`make(seed)` for the seeds `[first, 0 .. draws - 1]`, stacked (one
    tf.data pass: quicker than eager calls)."""
    seeds = tf.data.Dataset.range(draws).map(
        lambda i: tf.stack([tf.constant(first, tf.int64), i])
    )
    return next(iter(seeds.map(make).batch(draws))).numpy()


def test_memory_counts_are_uniform_compositions_within_caps() -> None:
    # 8 characters, 32 rows: a part is k with probability C(31-k, 6) / C(31, 7)
    # (23 % for one row); compositions beyond the cap are redrawn.
    from math import comb

    def counts(first: int, n: int, per: int, cap: int, draws: int) -> np.ndarray:
        make = lambda seed: omniglot._memory_counts(seed, n, per, cap=cap)
        return _by_seed(make, first, draws)

    draws = counts(1, 8, 4, cap=16, draws=3000)
    assert draws.dtype == np.int32 and draws.shape == (3000, 8)
    assert np.all(draws.sum(axis=1) == 32) and draws.min() >= 1 and draws.max() <= 16
    for k in (1, 2, 3, 8):
        want = comb(31 - k, 6) / comb(31, 7)
        got = np.mean(draws == k)
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / draws.size) + 0.005
    # 3 parts of 12 rows, cap 5: 10 of the 55 compositions fit; the kept one
    # is the first that fits, not the even split 4, 4, 4 every time.
    tight = counts(2, 3, 4, cap=5, draws=20)
    assert np.all(tight.sum(axis=1) == 12) and tight.min() >= 2 and tight.max() <= 5
    assert np.mean(np.all(tight == 4, axis=1)) < 0.5
    np.testing.assert_array_equal(  # Cap = per: only the even split fits.
        omniglot._memory_counts(tf.constant([2, 0]), 5, 3, cap=3), [3] * 5
    )
    np.testing.assert_array_equal(  # Same seed, same counts.
        omniglot._memory_counts(tf.constant([4, 5]), 8, 4, cap=16),
        omniglot._memory_counts(tf.constant([4, 5]), 8, 4, cap=16),
    )
    # 8 characters of 16 rows, cap 19 (T = 1, Mpc = 16): almost no drawn
    # composition fits, so the exact draw decides; a part is j with
    # probability N[7, 128 - j] / N[8, 128], never the even split throughout.
    log_n = omniglot._capped_compositions(8, 128, 19)
    near = counts(3, 8, 16, cap=19, draws=400)
    assert np.all(near.sum(axis=1) == 128) and near.min() >= 1 and near.max() <= 19
    assert not np.any(np.all(near == 16, axis=1))
    for j in (10, 16, 19):
        want = np.exp(log_n[7, 128 - j] - log_n[8, 128])
        got = np.mean(near == j)
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / near.size) + 0.005


@pytest.mark.parametrize("n,per,cap", [(3, 2, 3), (4, 3, 5), (2, 5, 6), (5, 2, 2)])
def test_capped_composition_counts_are_exact(n: int, per: int, cap: int) -> None:
    # N[k, r] against enumeration, and the exact draw's chain of conditionals
    # N[k - 1, r - j] / N[k, r] gives each split probability 1 / N[n, n * per].
    import itertools

    total = n * per
    log_n = omniglot._capped_compositions(n, total, cap)
    for k in range(n + 1):
        for r in range(total + 1):
            ways = sum(
                sum(c) == r for c in itertools.product(range(1, cap + 1), repeat=k)
            )
            assert (np.exp(log_n[k, r]) if ways else 0.0) == pytest.approx(ways)
    splits = [
        c for c in itertools.product(range(1, cap + 1), repeat=n) if sum(c) == total
    ]
    for split in splits:
        log_p, rest = 0.0, total
        for i, j in enumerate(split):
            log_p += log_n[n - i - 1, rest - j] - log_n[n - i, rest]
            rest -= j
        assert log_p == pytest.approx(-np.log(len(splits)), abs=1e-12)
    # The sampler itself: only those splits, each of them (a few hundred draws).
    make = lambda seed: omniglot._uniform_capped_counts(seed, n, per, cap)
    seen = {tuple(c) for c in _by_seed(make, 7, 30 * len(splits))}
    assert seen == set(splits)


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


@pytest.mark.parametrize("alphabets", [1, 2])
def test_episode_alphabets(split, alphabets: int) -> None:
    # Each episode's characters (targets and confounders) come from at most L
    # alphabets, drawn uniformly; the characters stay distinct.
    _, test = split
    args = (tf.constant(test.images), tf.constant(test.alphabet), 12, 1, 1, 8)
    make = omniglot.episode_batch_fn(
        *args, seed=0, stream=0, episode_alphabets=alphabets
    )
    steps = 300
    b = _batches(make, 0, steps)
    chars = np.concatenate([b["x_label"], b["memory_label"]], axis=1)  # [S, 32]
    used = [set(test.alphabet[row].tolist()) for row in chars]
    assert max(len(u) for u in used) <= alphabets
    assert all(len(set(row.tolist())) == 20 for row in b["memory_label"])
    counts = np.bincount(np.concatenate([sorted(u) for u in used]), minlength=5)
    # Uniform over the 5 alphabets: L * 300 / 5 = 60 L each (sd < 11 L).
    assert np.abs(counts - alphabets * steps / 5).max() < 40 * alphabets, counts


def test_episode_alphabets_all_is_the_default(split) -> None:
    # L = every alphabet of the split leaves the character draw unchanged.
    _, test = split
    args = (tf.constant(test.images), tf.constant(test.alphabet), 8, 4, 4, 2)
    before = _batches(omniglot.episode_batch_fn(*args, seed=5, stream=1), 3, 4)
    every = _batches(
        omniglot.episode_batch_fn(*args, seed=5, stream=1, episode_alphabets=5), 3, 4
    )
    for key in before:
        np.testing.assert_array_equal(before[key], every[key])


@pytest.mark.parametrize(
    "c,t,mpc,f,options,message",
    [
        (8, 17, 4, 0, {}, "--targets_per_class"),
        (8, 4, 17, 0, {}, "--memory_per_class"),
        (145, 4, 4, 0, {}, "--batch_classes"),
        (8, 4, 4, 137, {}, "--confounder_classes"),
        (0, 4, 4, 0, {}, "--batch_classes"),
        (8, 0, 4, 0, {}, "--targets_per_class"),
        (8, 4, -1, 0, {}, "--memory_per_class"),
        (8, 4, 4, -1, {}, "--confounder_classes"),
        (8, 4, 4, 0, {"absent_classes": 9}, "--absent_classes"),
        (8, 4, 4, 0, {"absent_classes": -1}, "--absent_classes"),
        (8, 4, 4, 130, {"absent_classes": 7}, "--absent_classes"),
        (8, 1, 1, 0, {"episode_alphabets": -1}, "--episode_alphabets must be >= 0"),
        (
            8,
            1,
            1,
            0,
            {"episode_alphabets": 6},
            "--episode_alphabets=6 exceeds the split's 5",
        ),
        (24, 1, 1, 0, {"episode_alphabets": 1}, "alphabets hold 23 characters"),
    ],
)
def test_episode_bad_sizes(
    split, c: int, t: int, mpc: int, f: int, options: dict, message: str
) -> None:
    """Bad episode sizes are one-line ValueErrors naming the flag."""
    _, test = split
    with pytest.raises(ValueError) as info:
        omniglot.episode_batch_fn(
            tf.constant(test.images),
            tf.constant(test.alphabet),
            c,
            t,
            mpc,
            f,
            seed=0,
            stream=0,
            **options,
        )
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_with_rotations_adds_each_character_rotated_as_new_characters(split) -> None:
    # Block k of the 4C characters is the C rotated by 90 k degrees, of
    # alphabets k A + i; episodes over them draw rotated characters, with
    # every target and memory row the rotated drawing its label names.
    train, _ = split
    rotated = omniglot.with_rotations(train)
    c, a = train.num_characters, len(train.alphabet_names)
    assert rotated.images.shape == (4 * c, *train.images.shape[1:])
    assert not rotated.images.flags.writeable
    for k in range(4):
        block = rotated.images[k * c : (k + 1) * c]
        np.testing.assert_array_equal(block, np.rot90(train.images, k, axes=(2, 3)))
        np.testing.assert_array_equal(
            rotated.alphabet[k * c : (k + 1) * c], train.alphabet + k * a
        )
    assert rotated.alphabet_names[a] == f"{train.alphabet_names[0]}@90"
    assert rotated.char_names[3 * c] == f"{train.char_names[0]}@270"
    assert rotated.char_names[:c] == train.char_names
    # An asymmetric character is not its own rotation.
    assert not np.array_equal(rotated.images[c], rotated.images[0])
    args = (tf.constant(rotated.images), tf.constant(rotated.alphabet), 8, 4, 4, 0)
    b = _batches(omniglot.episode_batch_fn(*args, seed=3, stream=0), 10, 16)
    for s in range(16):
        xl, xd = b["x_label"][s], b["x_drawer"][s]
        np.testing.assert_array_equal(b["x"][s, ..., 0], rotated.images[xl, xd])
    # Each rotation's alphabets hold a quarter of the mass: about 3/4 of the
    # draws are rotated (128 target characters, so not all of one block).
    blocks = np.unique(b["x_label"] // c)
    assert set(blocks.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("preset", ["omniglot_fewshot", "mnist_recall"])
def test_evaluation_sets_follow_eval_seed_not_the_run_seed(preset) -> None:
    """Runs of different `--seed` train on different batches but are evaluated
    on the same episodes (recall: the same test memories); `eval_seed` draws
    other ones."""
    from vma_tf import configs
    from vma_tf.data.experiments import make_data

    base = configs.override(configs.get_preset(preset), data_dir=str(SHARED))

    def first(**flags):
        data = make_data(configs.override(base, **flags))
        evals = {name: next(iter(ds))["x"].numpy() for name, ds in data.evals.items()}
        return evals, data.make_batch(tf.constant(0, tf.int64))["x"].numpy()

    (evals, train), (evals_1, train_1) = first(), first(seed=1)
    other, _ = first(eval_seed=1)
    assert not np.array_equal(train, train_1)
    assert evals.keys() == evals_1.keys() == other.keys()
    for name in evals:
        np.testing.assert_array_equal(evals[name], evals_1[name])
        assert not np.array_equal(evals[name], other[name]), name


def test_rotated_classes_reach_the_training_episodes_only(split) -> None:
    from vma_tf import configs
    from vma_tf.data.experiments import make_data

    train, _ = split
    base = configs.get_preset("omniglot_fewshot")
    config = configs.override(base, data_dir=str(SHARED), rotated_classes=True)
    data, plain = (
        make_data(config),
        make_data(configs.override(base, data_dir=str(SHARED))),
    )
    labels = np.concatenate(
        [data.make_batch(tf.constant(s, tf.int64))["x_label"] for s in range(4)]
    )
    assert labels.max() >= train.num_characters  # Rotated characters drawn.
    assert labels.max() < 4 * train.num_characters
    for name, batches in data.evals.items():  # Evaluation as drawn.
        for got, want in zip(batches, plain.evals[name]):
            np.testing.assert_array_equal(got["x"], want["x"])
            break
    with pytest.raises(
        configs.ConfigError, match="--rotated_classes is for the episodic"
    ):
        configs.validate(
            configs.override(configs.get_preset("mnist_recall"), rotated_classes=True)
        )


def test_mixed_memory_reaches_the_training_episodes_only(split) -> None:
    from vma_tf import configs
    from vma_tf.data.experiments import make_data

    base = configs.get_preset("omniglot_fewshot")
    config = configs.override(base, data_dir=str(SHARED), mixed_memory=True)
    data, plain = (
        make_data(config),
        make_data(configs.override(base, data_dir=str(SHARED))),
    )
    mpc = base.data.memory_per_class
    counts = []
    for s in range(8):
        labels = data.make_batch(tf.constant(s, tf.int64))["memory_label"].numpy()
        counts += np.unique(labels, return_counts=True)[1].tolist()
    assert min(counts) < mpc < max(counts)  # Mixed in training.
    for name, batches in data.evals.items():  # Evaluation: the paper's episodes.
        for got, want in zip(batches, plain.evals[name]):
            np.testing.assert_array_equal(got["memory"], want["memory"])
            break
    with pytest.raises(configs.ConfigError, match="--mixed_memory is for the episodic"):
        configs.validate(
            configs.override(configs.get_preset("mnist_recall"), mixed_memory=True)
        )
