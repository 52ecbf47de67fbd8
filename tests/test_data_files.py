"""Tests for vma_tf.data.files (lookup, verification, downloads) and vma_tf.data.mnist."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest

from vma_tf.data import files
from vma_tf.data.files import (
    REGISTRY,
    DataError,
    DataFile,
    find_file,
    resolve_data_dirs,
)
from vma_tf.data.mnist import _parse_amat, load_binarized_mnist

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FAKE_NAME = "sub/fake.bin"
FAKE_BYTES = b"variational memory addressing\n" * 1000
FAKE_SHA = hashlib.sha256(FAKE_BYTES).hexdigest()


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


def _fake_urlopen(
    payload: bytes, calls: list[str] | None = None
) -> Callable[..., io.BytesIO]:
    def urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        assert timeout is not None and timeout <= 120
        if calls is not None:
            calls.append(url)
        return io.BytesIO(payload)

    return urlopen


def _failing_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
    raise OSError("network unreachable (test)")


@pytest.fixture
def fake_entry(monkeypatch: pytest.MonkeyPatch) -> DataFile:
    entry = DataFile(FAKE_NAME, FAKE_SHA, ("https://example.invalid/fake.bin",))
    monkeypatch.setitem(REGISTRY, FAKE_NAME, entry)
    return entry


@pytest.fixture
def isolated(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An empty working directory with no VMA_DATA_DIR and no network."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("VMA_DATA_DIR", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _failing_urlopen)
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


def test_find_file_lookup_order(
    fake_entry: DataFile,
    isolated: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv("VMA_DATA_DIR", str(env))
    in_cwd = _put(isolated / "data", FAKE_NAME, FAKE_BYTES)
    assert find_file(FAKE_NAME) == in_cwd
    assert find_file(FAKE_NAME, str(explicit)) == in_cwd  # explicit dir has no copy
    in_env = _put(env, FAKE_NAME, FAKE_BYTES)
    assert find_file(FAKE_NAME) == in_env
    in_explicit = _put(explicit, FAKE_NAME, FAKE_BYTES)
    assert find_file(FAKE_NAME, str(explicit)) == in_explicit
    assert find_file(FAKE_NAME, explicit) == in_explicit  # PathLike works too
    assert find_file(FAKE_NAME) == in_env


def test_unknown_name(isolated: pathlib.Path) -> None:
    with pytest.raises(DataError, match="not in the registry") as info:
        find_file("no_such_file.bin")
    assert "\n" not in str(info.value)


def test_verification_is_cached(
    fake_entry: DataFile, isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(isolated / "data", FAKE_NAME, FAKE_BYTES)
    calls: list[object] = []
    real = files.sha256_file

    def counting(path: object) -> str:
        calls.append(path)
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "sha256_file", counting)
    for _ in range(3):
        find_file(FAKE_NAME)
    assert len(calls) == 1


# --------------------------------------------------------------------- verification


def test_truncated_file_raises_one_line_error(
    fake_entry: DataFile, isolated: pathlib.Path
) -> None:
    path = _put(isolated / "data", FAKE_NAME, FAKE_BYTES[:-7])
    with pytest.raises(DataError) as info:
        find_file(FAKE_NAME)
    message = str(info.value)
    assert str(path) in message
    assert FAKE_SHA in message
    assert "\n" not in message and "\r" not in message
    # verify=False skips the check.
    assert find_file(FAKE_NAME, verify=False) == path


def test_corrupted_first_copy_is_not_skipped(
    fake_entry: DataFile, isolated: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    explicit = tmp_path / "explicit"
    _put(explicit, FAKE_NAME, b"garbage")
    _put(isolated / "data", FAKE_NAME, FAKE_BYTES)
    with pytest.raises(DataError, match="corrupted or truncated"):
        find_file(FAKE_NAME, str(explicit))


@needs_shared
def test_truncated_real_file(isolated: pathlib.Path) -> None:
    assert SHARED is not None
    name = "binarized_mnist_test.amat.gz"
    data = (SHARED / name).read_bytes()
    path = _put(isolated / "data", name, data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        find_file(name)
    message = str(info.value)
    assert str(path) in message and REGISTRY[name].sha256 in message
    assert "\n" not in message


@needs_shared
def test_registry_matches_sha256sums() -> None:
    assert SHARED is not None
    listed = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        sha, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = sha
    assert {name: f.sha256 for name, f in REGISTRY.items()} == listed
    for name, entry in REGISTRY.items():
        assert entry.name == name
        assert all(url.startswith(("http://", "https://")) for url in entry.urls)
    for split in ("train", "valid", "test"):
        assert (
            REGISTRY[f"binarized_mnist_{split}.amat.gz"].decompressed_sha256 is not None
        )


# ------------------------------------------------------------------------ downloads


def test_missing_file_without_network(
    fake_entry: DataFile,
    isolated: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VMA_DATA_DIR", str(tmp_path / "env"))
    explicit = tmp_path / "explicit"
    with pytest.raises(DataError) as info:
        find_file(FAKE_NAME, str(explicit))
    message = str(info.value)
    assert FAKE_NAME in message and FAKE_SHA in message
    for directory in (explicit, tmp_path / "env", isolated / "data"):
        assert str(directory) in message
    assert "network unreachable" in message and "VMA_DATA_DIR" in message
    assert "\n" not in message
    assert _listing(tmp_path) == []


def test_missing_file_download_disabled(
    fake_entry: DataFile, isolated: pathlib.Path
) -> None:
    with pytest.raises(DataError, match="downloads are disabled"):
        find_file(FAKE_NAME, download=False)
    assert _listing(isolated) == []


def test_missing_file_without_url(
    isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY, FAKE_NAME, DataFile(FAKE_NAME, FAKE_SHA, ()))
    with pytest.raises(DataError, match="no upstream URL"):
        find_file(FAKE_NAME)


def test_download_lands_verified(
    fake_entry: DataFile, isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(FAKE_BYTES, calls))
    path = find_file(FAKE_NAME)
    assert path == isolated / "data" / FAKE_NAME
    assert path.read_bytes() == FAKE_BYTES
    assert calls == list(fake_entry.urls)
    assert _listing(isolated) == [str(pathlib.Path("data") / FAKE_NAME)]
    # Now found locally, no further download.
    assert find_file(FAKE_NAME) == path and len(calls) == 1


@needs_shared
def test_download_of_real_file(
    isolated: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SHARED is not None
    name = "mnist_idx/t10k-labels-idx1-ubyte.gz"
    data = (SHARED / name).read_bytes()
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(data, calls))
    target_dir = tmp_path / "explicit"
    path = find_file(name, str(target_dir))
    assert path == target_dir / name
    assert path.read_bytes() == data
    assert calls == [
        "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz"
    ]
    assert _listing(target_dir) == [name]


@needs_shared
def test_download_of_uncompressed_amat_is_gzipped(
    isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SHARED is not None
    name = "binarized_mnist_test.amat.gz"
    raw = gzip.decompress((SHARED / name).read_bytes())
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(raw, calls))
    path = find_file(name)
    assert calls == [
        "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_test.amat"
    ]
    assert path == isolated / "data" / name
    assert gzip.decompress(path.read_bytes()) == raw
    assert path.read_bytes()[4:8] == b"\0\0\0\0"  # mtime 0 in the gzip header
    # A fresh process (empty verification cache) accepts it via the decompressed sha256.
    files._VERIFIED.clear()
    assert find_file(name) == path
    images = load_binarized_mnist("test")
    assert images.shape == (10000, 784)


def test_download_with_bad_bytes_leaves_nothing(
    fake_entry: DataFile, isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(FAKE_BYTES[:-1]))
    with pytest.raises(DataError) as info:
        find_file(FAKE_NAME)
    message = str(info.value)
    assert "does not match" in message and FAKE_SHA in message and "\n" not in message
    assert _listing(isolated) == []


def test_interrupted_download_leaves_nothing(
    fake_entry: DataFile, isolated: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise TimeoutError("read timed out (test)")
            return super().read(10)

    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout=None: Broken(FAKE_BYTES)
    )
    with pytest.raises(DataError, match="read timed out"):
        find_file(FAKE_NAME)
    assert _listing(isolated) == []


# --------------------------------------------------------------------- binarized MNIST


def test_parse_amat_rejects_bad_content() -> None:
    line = " ".join(["0", "1"] * 392) + "\n"
    good = _parse_amat((line * 3).encode(), "x.amat")
    assert good.shape == (3, 784) and good.dtype == np.uint8
    np.testing.assert_array_equal(good[0], np.tile([0, 1], 392))
    with pytest.raises(DataError, match="x.amat"):
        _parse_amat((line * 2 + line.replace("1", "2", 1)).encode(), "x.amat")
    with pytest.raises(DataError, match="x.amat"):
        _parse_amat((line * 2).encode()[:-1], "x.amat")
    with pytest.raises(DataError, match="x.amat"):
        _parse_amat((line + line.replace(" ", ",", 1)).encode(), "x.amat")
    with pytest.raises(DataError, match="x.amat"):
        _parse_amat(b"", "x.amat")


def test_load_binarized_mnist_bad_split() -> None:
    with pytest.raises(ValueError, match="train, valid, test"):
        load_binarized_mnist("validation")


@needs_shared
@pytest.mark.parametrize(
    "split, n", [("train", 50000), ("valid", 10000), ("test", 10000)]
)
def test_load_binarized_mnist(split: str, n: int) -> None:
    images = load_binarized_mnist(split, str(SHARED))
    assert images.shape == (n, 784)
    assert images.dtype == np.uint8
    assert images.flags.c_contiguous and not images.flags.writeable
    assert set(np.unique(images).tolist()) == {0, 1}
    assert 0.05 < images.mean() < 0.25  # ~13% of binarized MNIST pixels are on
    assert load_binarized_mnist(split, str(SHARED)) is images  # cached
    with pytest.raises(ValueError):
        images[0, 0] = 1


@needs_shared
def test_load_binarized_mnist_matches_loadtxt() -> None:
    assert SHARED is not None
    with gzip.open(SHARED / "binarized_mnist_test.amat.gz", "rt") as f:
        first_line = f.readline()
    reference = np.loadtxt(io.StringIO(first_line), dtype=np.uint8)
    assert reference.shape == (784,)
    images = load_binarized_mnist("test", str(SHARED))
    np.testing.assert_array_equal(images[0], reference)
