"""Raw data files and their tfds preparation: lookup, one-line errors, atomic
preparation, and MNIST served by tfds equal to the raw files row for row."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import pathlib

import numpy as np
import pytest

from vma_tf.data import omniglot_builders, tfds_data
from vma_tf.data.files import SHA256, DataError, locate, resolve_data_dirs
from vma_tf.data.mnist import load_binarized_mnist, load_mnist_train_images

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CSV = "omniglot_characters.csv"


def _shared_data_dir() -> pathlib.Path | None:
    env = os.environ.get("VMA_DATA_DIR")
    for candidate in ([pathlib.Path(env)] if env else []) + [
        REPO_ROOT.parent / "shared" / "data"
    ]:
        if (candidate / "SHA256SUMS").is_file():
            return candidate
    return None


SHARED = _shared_data_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None,
    reason="shared data not found: set VMA_DATA_DIR or provide ../shared/data next to the repo",
)


def _listing(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def isolated(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An empty working directory, no VMA_DATA_DIR, and an empty tfds cache."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("VMA_DATA_DIR", raising=False)
    monkeypatch.setenv("VMA_TFDS_DIR", str(tmp_path / "tfds"))
    return work


def _put(directory: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- lookup


def test_resolve_data_dirs_order(
    isolated: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_data_dirs(None) == [isolated / "data"]
    monkeypatch.setenv("VMA_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dirs(None) == [tmp_path / "env", isolated / "data"]
    assert resolve_data_dirs(str(tmp_path / "explicit")) == [
        tmp_path / "explicit",
        tmp_path / "env",
        isolated / "data",
    ]
    # Relative paths are made absolute against the working directory; duplicates dropped.
    assert resolve_data_dirs("data") == [isolated / "data", tmp_path / "env"]


def test_locate_lookup_order(
    isolated: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv("VMA_DATA_DIR", str(env))
    in_cwd = _put(isolated / "data", CSV, b"x")
    assert locate([CSV]) == {CSV: in_cwd}
    assert locate([CSV], str(explicit)) == {CSV: in_cwd}  # No copy in explicit.
    in_env = _put(env, CSV, b"x")
    assert locate([CSV]) == {CSV: in_env}
    in_explicit = _put(explicit, CSV, b"x")
    assert locate([CSV], explicit) == {CSV: in_explicit}  # PathLike works too.
    assert locate([CSV]) == {CSV: in_env}


def test_unknown_name(isolated: pathlib.Path) -> None:
    with pytest.raises(DataError, match="not known") as info:
        locate(["no_such_file.bin"])
    assert "\n" not in str(info.value)


def test_missing_files_one_line(
    isolated: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMA_DATA_DIR", str(tmp_path / "env"))
    explicit = tmp_path / "explicit"
    names = ["omniglot28_background.npz", "omniglot28_evaluation.npz"]
    _put(isolated / "data", names[0], b"x")
    with pytest.raises(DataError) as info:
        locate(names, str(explicit))
    message = str(info.value)
    assert f"{names[1]} (sha256 {SHA256[names[1]]})" in message
    assert names[0] not in message
    for directory in (explicit, tmp_path / "env", isolated / "data"):
        assert str(directory) in message
    assert "VMA_DATA_DIR" in message and "--data_dir" in message
    assert "\n" not in message
    # Preparing fails the same way, before the cache is created.
    with pytest.raises(DataError, match=names[1]):
        tfds_data.prepare("omniglot_gmn", explicit)
    assert _listing(tmp_path / "tfds") == []  # Nothing written, not even a lock.


@needs_shared
def test_registry_matches_sha256sums_and_tfds_checksums() -> None:
    assert SHARED is not None
    listed = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        sha, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = sha
    assert {name: listed[name] for name in SHA256} == SHA256
    # The Omniglot builders' tfds checksums are the same files.
    infos = omniglot_builders.OmniglotGmn28.url_infos
    assert sorted(i.filename for i in infos.values()) == sorted(
        n for n in SHA256 if n.startswith("omniglot")
    )
    for info in infos.values():
        assert info.checksum == SHA256[info.filename]
        assert info.size == (SHARED / info.filename).stat().st_size


# ------------------------------------------------------ errors and atomic preparation


@needs_shared
def test_truncated_gzip_names_file_and_sha(isolated: pathlib.Path) -> None:
    assert SHARED is not None
    data = (SHARED / "binarized_mnist_test.amat.gz").read_bytes()
    _put(isolated / "data", "binarized_mnist_train.amat.gz", data[: len(data) // 2])
    for split in ("valid", "test"):
        _put(isolated / "data", f"binarized_mnist_{split}.amat.gz", data)
    with pytest.raises(DataError) as info:
        tfds_data.prepare("binarized_mnist")
    message = str(info.value)
    assert "binarized_mnist_train.amat.gz" in message and "\n" not in message
    assert SHA256["binarized_mnist_train.amat.gz"] in message
    assert _listing(isolated.parent / "tfds") == [".lock"]


@needs_shared
def test_corrupted_file_rejected_by_tfds_checksum(isolated: pathlib.Path) -> None:
    assert SHARED is not None
    for name in ("omniglot28_background.npz", "omniglot28_evaluation.npz"):
        data = bytearray((SHARED / name).read_bytes())
        if name.endswith("evaluation.npz"):
            data[1000] ^= 1  # Same size, one bit flipped.
        _put(isolated / "data", name, bytes(data))
    assert hashlib.sha256(data).hexdigest() != SHA256[name]
    with pytest.raises(DataError) as info:
        tfds_data.prepare("omniglot_gmn")
    message = str(info.value)
    assert str(isolated / "data" / name) in message and SHA256[name] in message
    assert "\n" not in message
    assert _listing(isolated.parent / "tfds") == [".lock"]


@needs_shared
def test_interrupted_preparation_leaves_nothing(
    isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(omniglot_builders, "_read_gmn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tfds_data.prepare("omniglot_gmn", SHARED)
    cache = isolated.parent / "tfds"
    assert not tfds_data.builder("omniglot_gmn").is_prepared()
    assert _listing(cache) == [".lock"]
    # Leftovers of a killed run (stale staging/incomplete dirs) go at the next prepare.
    (cache / "staging.stale").mkdir()
    (cache / "omniglot_gmn28" / "incomplete.stale").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        tfds_data.prepare("omniglot_gmn", SHARED)
    assert not (cache / "staging.stale").exists()
    assert not (cache / "omniglot_gmn28" / "incomplete.stale").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["file", "under_file"])
def test_cache_that_is_not_a_directory_is_one_line(
    isolated: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    inside: bool,
) -> None:
    for name in ("omniglot28_background.npz", "omniglot28_evaluation.npz"):
        _put(isolated / "data", name, b"x")  # Only looked up before the lock.
    regular = _put(tmp_path, "not_a_dir", b"")
    cache = regular / "tfds" if inside else regular
    monkeypatch.setenv("VMA_TFDS_DIR", str(cache))
    with pytest.raises(DataError) as info:
        tfds_data.prepare("omniglot_gmn")
    message = str(info.value)
    assert str(cache) in message and "$VMA_TFDS_DIR" in message
    assert "\n" not in message


@needs_shared
def test_corrupted_mnist_idx_gz_is_its_content_not_uncompressed(
    isolated: pathlib.Path,
) -> None:
    assert SHARED is not None
    names = [n for n in SHA256 if n.startswith("mnist_idx/")]
    for name in names:
        data = bytearray((SHARED / name).read_bytes())
        if name.endswith("t10k-labels-idx1-ubyte.gz"):
            data[100] ^= 1  # Same size, one bit flipped.
        _put(isolated / "data", name, bytes(data))
    with pytest.raises(DataError) as info:
        tfds_data.prepare("mnist")
    message = str(info.value)
    bad = "mnist_idx/t10k-labels-idx1-ubyte.gz"
    assert message.startswith(f"{isolated / 'data' / bad}: its content does not match")
    assert SHA256[bad] in message and "\n" not in message


# ------------------------------------------------------- decoded splits, kept on disk


class _Records:
    """Stands in for a prepared builder: all `read_split` uses of one."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = str(data_dir)
        self.reads = 0  # Times the records were decoded.

    def as_dataset(self, split, shuffle_files, read_config):
        import tensorflow as tf

        self.reads += 1
        image = np.arange(12, dtype=np.uint8).reshape(3, 4)
        return tf.data.Dataset.from_tensor_slices(
            {"image": image, "name": np.array([b"a", b"bc", b"d"])}
        )


def _assert_same(arrays: dict, expected: dict) -> None:
    assert arrays.keys() == expected.keys()
    for key, value in expected.items():
        assert arrays[key].dtype == value.dtype
        np.testing.assert_array_equal(arrays[key], value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_npz", "no_key"])
def test_damaged_decoded_split_is_deleted_and_decoded_again(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture, damage: str
) -> None:
    records = _Records(tmp_path)
    first = tfds_data.read_split(records, "train")
    assert first["name"].dtype == object and records.reads == 1
    cached = tmp_path / "vma_arrays-train.npz"
    _assert_same(tfds_data.read_split(records, "train"), first)
    assert records.reads == 1  # Read from the decoded copy.
    data = cached.read_bytes()
    if damage == "no_key":
        np.savez(cached, image=first["image"])  # KeyError: no object keys.
    else:
        damaged = {
            "truncated": data[: len(data) // 2],
            "empty": b"",
            "not_npz": b"x" * 64,
        }
        cached.write_bytes(damaged[damage])
    capsys.readouterr()
    _assert_same(tfds_data.read_split(records, "train"), first)
    assert records.reads == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{cached}: unreadable") and err.count("\n") == 1
    assert cached.read_bytes() == data  # Rewritten: the next run reads it.
    _assert_same(tfds_data.read_split(records, "train"), first)
    assert records.reads == 2 and _listing(tmp_path) == [cached.name]


def test_decoded_split_is_synced_and_a_failed_write_leaves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _Records(tmp_path)
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or fsync(fd))
    monkeypatch.setattr(
        os, "replace", lambda src, dst: calls.append("replace") or replace(src, dst)
    )
    first = tfds_data.read_split(records, "train")
    assert calls == ["fsync", "replace"]

    def cut_short(file, **arrays):  # A full disk, or `ulimit -f`.
        file.write(b"PK\x03\x04" + bytes(100))
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(np, "savez", cut_short)
    _assert_same(tfds_data.read_split(records, "test"), first)  # Best effort.
    assert _listing(tmp_path) == ["vma_arrays-train.npz"]


# ------------------------------------------------------------- MNIST served by tfds


def _raw_amat(path: pathlib.Path) -> np.ndarray:
    """Rows of a binarized MNIST ``.amat.gz``: `[N, 784]` uint8 (784 '0'/'1' + sep)."""
    raw = np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8)
    return raw.reshape(-1, 1568)[:, ::2] - np.uint8(ord("0"))


def test_load_binarized_mnist_bad_split() -> None:
    with pytest.raises(ValueError, match="train, valid, test"):
        load_binarized_mnist("validation")


@needs_shared
@pytest.mark.parametrize(
    "split, tfds_split, n",
    [
        ("train", "train", 50000),
        ("valid", "validation", 10000),
        ("test", "test", 10000),
    ],
)
def test_binarized_mnist_equals_raw_file(split: str, tfds_split: str, n: int) -> None:
    assert SHARED is not None
    images = load_binarized_mnist(split, str(SHARED))
    assert images.shape == (n, 784) and images.dtype == np.uint8
    assert images.flags.c_contiguous and not images.flags.writeable
    assert load_binarized_mnist(split, str(SHARED)) is images  # Cached.
    raw = _raw_amat(SHARED / f"binarized_mnist_{split}.amat.gz")
    np.testing.assert_array_equal(images, raw)  # Exact, row for row.
    # tfds' records are in hashed order; file_order is what puts them back.
    records = tfds_data.read_split(tfds_data.prepare("binarized_mnist"), tfds_split)
    records = records["image"].reshape(n, 784)
    assert not np.array_equal(records, raw)
    np.testing.assert_array_equal(records, raw[tfds_data.file_order(tfds_split, n)])


@needs_shared
def test_mnist_train_images_equal_idx_file() -> None:
    assert SHARED is not None
    path = SHARED / "mnist_idx" / "train-images-idx3-ubyte.gz"
    raw = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=16)
    images = load_mnist_train_images(SHARED)
    assert images.shape == (60000, 784) and not images.flags.writeable
    np.testing.assert_array_equal(images, raw.reshape(60000, 784))
