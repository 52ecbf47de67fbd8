"""tfds builders for the four Omniglot views the experiments use.

Each builder reads the raw files from tfds' ``manual_dir`` through
``dl_manager.download``: tfds finds them there by the file names registered in
``vma_tf/data/checksums.tsv`` and checks their size and sha256 before any is
read (see :mod:`vma_tf.data.tfds_data`, which stages the files and prepares).
Images are ink = 1, uint8 0/1. Examples are keyed by their position in the
arrays the loaders return, and ``disable_shuffling`` keeps that order in the
prepared records, so the loaders get back exactly these arrays.

The classes pass ``skip_registration=True``: importing this module does not
register anything with tfds; instantiate a class with a ``data_dir`` instead.
"""

from __future__ import annotations

import csv

import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    "DRAWERS",
    "FEWSHOT_TEST_ALPHABETS",
    "OmniglotBgEval26",
    "OmniglotFewshot26",
    "OmniglotGmn28",
    "OmniglotLearned28",
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
_LEARNED_TRAIN_DRAWERS = 15
_POOL = 4
_CROP = 104  # 105 -> 104 so that 4x4 pooling tiles the image exactly.
_CHUNK_CHARS = 128  # Characters pooled at once, to bound temporaries.
# PIL's NEAREST resize 105 -> 26 (torchvision's `Resize(26, NEAREST)`) reads
# source pixel floor((i + 0.5) * 105 / 26) = 2 + 4 i of output pixel i.
_NEAREST = slice(2, 105, 4)


def _download(dl_manager, names: tuple[str, ...]) -> dict[str, str]:
    """``name -> local path`` of registered raw files (found in ``manual_dir``, checked)."""
    by_name = {info.filename: url for url, info in OmniglotGmn28.url_infos.items()}
    paths = dl_manager.download({name: by_name[name] for name in names})
    return {name: str(path) for name, path in paths.items()}


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


def _nearest_ink(background: np.ndarray) -> np.ndarray:
    """Nearest-neighbour downscaling of full-resolution images, as PIL's.

    Args:
        background: bool `[N, 20, 105, 105]`, True = white background, False = ink.

    Returns:
        uint8 `[N, 20, 26, 26]`: pixel `(i, j)` is 1 where source pixel
        `(2 + 4 i, 2 + 4 j)` is ink (`Image.resize((26, 26), Image.NEAREST)`).
    """
    return (~background[:, :, _NEAREST, _NEAREST]).astype(np.uint8)


def _read_characters(path: str) -> list[dict]:
    """The rows of ``omniglot_characters.csv`` (global character id order)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_gmn(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """One GMN 28x28 file, characters in sorted key order.

    Args:
        path: ``omniglot28_{background,evaluation}.npz`` (keys
            ``images_<set>/<Alphabet>/characterNN``, uint8 `[20, 784]` of 0/255).

    Returns:
        `(alphabets, characters, images)`: per character its alphabet folder
        name and ``characterNN``, and uint8 `[C, 20, 28, 28]` of 0/1, ink = 1.
    """
    with np.load(path, allow_pickle=False) as npz:
        keys = sorted(npz.files)
        raw = np.stack([npz[k] for k in keys])
    parts = [k.split("/") for k in keys]
    images = (raw == 0).astype(np.uint8).reshape(len(keys), DRAWERS, 28, 28)
    return [p[1] for p in parts], [p[2] for p in parts], images


def _character_features() -> dict[str, tfds.features.FeatureConnector]:
    return {"alphabet": tfds.features.Text(), "character": tfds.features.Text()}


class OmniglotFewshot26(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """26x26 Omniglot with the paper's 45/5 alphabet split (few-shot experiments).

    The 105x105 originals (background then evaluation set, i.e. global
    character id order) are cropped to 104x104 by dropping the last row and
    column and 4x4 max-pooled (a pixel is ink if any of its 16 source pixels
    is). Alphabet and character names come from ``omniglot_characters.csv``.
    Splits: ``test`` holds the 144 characters of :data:`FEWSHOT_TEST_ALPHABETS`,
    ``train`` the 1479 characters of the 45 others, each in global id order.
    One example per character: ``images`` uint8 `[20, 26, 26]`, ``alphabet``,
    ``character`` (text).
    """

    VERSION = tfds.core.Version("1.0.0")
    RAW_FILES = (
        "omniglot105_background.npz",
        "omniglot105_evaluation.npz",
        "omniglot_characters.csv",
    )

    def _info(self) -> tfds.core.DatasetInfo:
        shape = (DRAWERS, _CROP // _POOL, _CROP // _POOL)
        features = {"images": tfds.features.Tensor(shape=shape, dtype=np.uint8)}
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(features | _character_features()),
            disable_shuffling=True,
        )

    @staticmethod
    def _downscale(background: np.ndarray) -> np.ndarray:
        """bool `[N, 20, 105, 105]` (True = background) -> uint8 `[N, 20, 26, 26]` ink."""
        return _pool_ink(background)

    @staticmethod
    def _is_test(rows: list[dict]) -> np.ndarray:
        """bool `[1623]`: the test characters among the csv's rows."""
        is_test = np.array([r["alphabet"] in FEWSHOT_TEST_ALPHABETS for r in rows])
        if int(is_test.sum()) != _FEWSHOT_TEST_CHARACTERS:
            raise ValueError(f"the 45/5 split has {int(is_test.sum())} test characters")
        return is_test

    def _split_generators(self, dl_manager):
        paths = _download(dl_manager, self.RAW_FILES)
        pooled = []
        for set_name in ("background", "evaluation"):
            with np.load(paths[f"omniglot105_{set_name}.npz"]) as npz:
                pooled.append(self._downscale(npz["images"]))
        rows = _read_characters(paths["omniglot_characters.csv"])
        images = np.concatenate(pooled)
        is_test = self._is_test(rows)
        return {
            split: self._generate_examples(images, rows, is_test == (split == "test"))
            for split in ("train", "test")
        }

    def _generate_examples(self, images, rows, keep):
        for key in np.flatnonzero(keep):
            row = rows[key]
            yield (
                int(key),
                {
                    "images": images[key],
                    "alphabet": row["alphabet"],
                    "character": row["character"],
                },
            )


class OmniglotBgEval26(OmniglotFewshot26, skip_registration=True):
    """26x26 Omniglot, Lake's background/evaluation split, nearest-neighbour.

    The data of the public PyTorch VMA (Table 1's second anchor): torchvision's
    ``Omniglot`` sets resized to 26x26 with ``Image.NEAREST`` (`_nearest_ink`:
    every fourth source pixel, thinner strokes than max-pooling's). Splits:
    ``train`` is the background set (964 characters, 30 alphabets), ``test``
    the evaluation set (659 characters, 20 alphabets), each in global id
    order. Examples as in `OmniglotFewshot26`.
    """

    @staticmethod
    def _downscale(background: np.ndarray) -> np.ndarray:
        return _nearest_ink(background)

    @staticmethod
    def _is_test(rows: list[dict]) -> np.ndarray:
        return np.array([r["set"] == "evaluation" for r in rows])


class OmniglotGmn28(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The 28x28 Omniglot of Generative Matching Networks.

    Splits: ``train`` is the background set (964 characters, 30 alphabets),
    ``test`` the evaluation set (659 characters, 20 alphabets), characters in
    sorted ``<Alphabet>/characterNN`` order. One example per character:
    ``images`` uint8 `[20, 28, 28]` (its 20 drawings, not in drawer order),
    ``alphabet``, ``character`` (text).
    """

    VERSION = tfds.core.Version("1.0.0")
    RAW_FILES = ("omniglot28_background.npz", "omniglot28_evaluation.npz")

    def _info(self) -> tfds.core.DatasetInfo:
        images = tfds.features.Tensor(shape=(DRAWERS, 28, 28), dtype=np.uint8)
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {"images": images} | _character_features()
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        paths = _download(dl_manager, self.RAW_FILES)
        return {
            "train": self._generate_examples(paths["omniglot28_background.npz"]),
            "test": self._generate_examples(paths["omniglot28_evaluation.npz"]),
        }

    def _generate_examples(self, path):
        alphabets, characters, images = _read_gmn(path)
        for key, (alphabet, character) in enumerate(zip(alphabets, characters)):
            yield (
                key,
                {
                    "images": images[key],
                    "alphabet": alphabet,
                    "character": character,
                },
            )


class OmniglotLearned28(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Unlabeled 28x28 Omniglot split by drawing, for the learned-memory experiment.

    All 1623 characters of the GMN files (background then evaluation, each in
    sorted key order): drawings 0..14 of every character are ``train`` (24,345
    images), drawings 15..19 ``test`` (8,115), character-major. One example
    per image: ``image`` uint8 `[28, 28]`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RAW_FILES = OmniglotGmn28.RAW_FILES

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Tensor(shape=(28, 28), dtype=np.uint8)
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"image": image}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        paths = _download(dl_manager, self.RAW_FILES)
        images = np.concatenate([_read_gmn(paths[name])[2] for name in self.RAW_FILES])
        return {
            "train": self._generate_examples(images[:, :_LEARNED_TRAIN_DRAWERS]),
            "test": self._generate_examples(images[:, _LEARNED_TRAIN_DRAWERS:]),
        }

    def _generate_examples(self, images):
        flat = images.reshape(-1, *images.shape[2:])
        for key, image in enumerate(flat):
            yield key, {"image": image}
