"""Locating, verifying and (optionally) downloading the data files.

Every data file the project uses is listed in :data:`REGISTRY` with its sha256.
:func:`find_file` looks for a file in, in order, an explicit ``data_dir``,
``$VMA_DATA_DIR`` and ``./data``; verifies it; and, if it is nowhere to be found,
tries to download it from its upstream URLs. Downloads go to a temporary file in
the target directory and are moved into place only once their sha256 verifies,
so a failed or interrupted download never leaves a partial file behind.

Only the standard library is used here.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable
from typing import BinaryIO

__all__ = [
    "DataError",
    "DataFile",
    "REGISTRY",
    "find_file",
    "resolve_data_dirs",
    "sha256_file",
]

_CHUNK = 1 << 20  # 1 MiB
_DOWNLOAD_TIMEOUT_S = 30.0
_ENV_VAR = "VMA_DATA_DIR"

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class DataFile:
    """One registered data file.

    Attributes:
        name: Path relative to a data directory, e.g. ``mnist_idx/t10k-labels-idx1-ubyte.gz``.
        sha256: sha256 (hex) of the file as stored under ``name``.
        urls: Upstream URLs to try, in order; empty if there is no known upstream.
        decompressed_sha256: If set, the upstream serves the *uncompressed* file whose
            sha256 is this value; the downloader verifies it and gzips it into ``name``.
            A local gzip file whose decompressed content has this sha256 is also accepted
            (a re-compression need not be byte-identical to the registered ``.gz``).
    """

    name: str
    sha256: str
    urls: tuple[str, ...]
    decompressed_sha256: str | None = None


class DataError(Exception):
    """A data file is missing, corrupted or unreadable. The message is always one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
_CVDF = "https://storage.googleapis.com/cvdf-datasets/mnist"
_OMNIGLOT105 = (
    "https://raw.githubusercontent.com/bitsandscraps/omniglot/"
    "9514cfd6780ed78e96a4d88bae8c85f3ee31359e"
)
_GMN = "https://raw.githubusercontent.com/sbos/gmn/d830b7092dd82a523f9ab8db7f919bfa6ad11523/data"

_FILES: tuple[DataFile, ...] = (
    DataFile(
        "binarized_mnist_train.amat.gz",
        "af247bd6075cf9adc4715459dcd5f13eaa99a2c92d8d81379a05da94770b6c0e",
        (f"{_LAROCHELLE}/binarized_mnist_train.amat",),
        decompressed_sha256="ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    ),
    DataFile(
        "binarized_mnist_valid.amat.gz",
        "533b71bc0198f4d73c54ae5fe6c96fc08dc3cf1b3fae24c5521dbc0452507e38",
        (f"{_LAROCHELLE}/binarized_mnist_valid.amat",),
        decompressed_sha256="1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    ),
    DataFile(
        "binarized_mnist_test.amat.gz",
        "32a3c54d03504632bf9f131b4a148c7567aa6fc87da017049b044bdc14c2a0f2",
        (f"{_LAROCHELLE}/binarized_mnist_test.amat",),
        decompressed_sha256="e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
    ),
    DataFile(
        "mnist_idx/train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        (f"{_CVDF}/train-images-idx3-ubyte.gz",),
    ),
    DataFile(
        "mnist_idx/train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        (f"{_CVDF}/train-labels-idx1-ubyte.gz",),
    ),
    DataFile(
        "mnist_idx/t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        (f"{_CVDF}/t10k-images-idx3-ubyte.gz",),
    ),
    DataFile(
        "mnist_idx/t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        (f"{_CVDF}/t10k-labels-idx1-ubyte.gz",),
    ),
    DataFile(
        "mnist.npz",
        "564eb681eb2f7bff726037f3dfc45398f3925355cc8e6db7dc5cd1e823aeb4ea",
        (),
    ),
    DataFile(
        "omniglot105_background.npz",
        "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
        (f"{_OMNIGLOT105}/images_background.npz",),
    ),
    DataFile(
        "omniglot105_evaluation.npz",
        "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
        (f"{_OMNIGLOT105}/images_evaluation.npz",),
    ),
    DataFile(
        "omniglot_characters.csv",
        "fd10579ba9e544c91ff7f79173b7180d60fb2be4ab641a2caebfcae4830c8c8b",
        (),
    ),
    DataFile(
        "omniglot28_background.npz",
        "136ac9970475ee96cb03275a4299233ef7d0f023380d2eff4ca73b31cc2f97da",
        (f"{_GMN}/train_small.npz",),
    ),
    DataFile(
        "omniglot28_evaluation.npz",
        "5ac797844c90af132a423614c198f7b83ef8fad7cf8d32d6dc4f24483d317ac3",
        (f"{_GMN}/test_small.npz",),
    ),
)

REGISTRY: dict[str, DataFile] = {f.name: f for f in _FILES}
"""All known data files, keyed by their path relative to a data directory."""

# Successful verifications: (resolved path, size, mtime_ns, expected sha256).
_VERIFIED: set[tuple[str, int, int, str]] = set()


def sha256_file(path: PathLike) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Args:
        path: The file to hash.

    Returns:
        The lowercase hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _gunzip_sha256(path: pathlib.Path) -> str | None:
    """Return the sha256 of the decompressed content of a gzip file, or None if unreadable."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def resolve_data_dirs(data_dir: PathLike | None = None) -> list[pathlib.Path]:
    """Return the directories searched for data files, in lookup order.

    The order is ``data_dir`` (if given), then ``$VMA_DATA_DIR`` (if set and
    non-empty), then ``./data`` relative to the current working directory.
    Duplicates are dropped; paths are made absolute (symlinks are not resolved).

    Args:
        data_dir: An explicit data directory, e.g. from ``--data_dir``.

    Returns:
        The absolute directories, first to search first.
    """
    candidates: list[PathLike] = []
    if data_dir is not None and str(data_dir):
        candidates.append(data_dir)
    env = os.environ.get(_ENV_VAR)
    if env:
        candidates.append(env)
    candidates.append(pathlib.Path.cwd() / "data")
    dirs: list[pathlib.Path] = []
    for candidate in candidates:
        path = pathlib.Path(candidate).expanduser().absolute()
        if path not in dirs:
            dirs.append(path)
    return dirs


def _cache_key(path: pathlib.Path, entry: DataFile) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, entry.sha256)


def _verify(path: pathlib.Path, entry: DataFile) -> None:
    """Check ``path`` against ``entry``; raise DataError on a mismatch. Results are cached."""
    key = _cache_key(path, entry)
    if key in _VERIFIED:
        return
    actual = sha256_file(path)
    ok = actual == entry.sha256
    if not ok and entry.decompressed_sha256 is not None:
        ok = _gunzip_sha256(path) == entry.decompressed_sha256
    if not ok:
        also = (
            f" (nor does its decompressed content match {entry.decompressed_sha256})"
            if entry.decompressed_sha256 is not None
            else ""
        )
        raise DataError(
            f"{path}: sha256 {actual} does not match the expected {entry.sha256}{also}; "
            "the file is corrupted or truncated — delete it and put a good copy there"
        )
    _VERIFIED.add(key)


def _copy_hashed(src: BinaryIO, dst: BinaryIO, compress: bool) -> str:
    """Copy ``src`` to ``dst`` (gzipping if ``compress``); return the sha256 of the bytes read."""
    digest = hashlib.sha256()
    if compress:
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=dst, compresslevel=9, mtime=0
        ) as gz:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                gz.write(chunk)
    else:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def _download_one(url: str, target: pathlib.Path, entry: DataFile) -> None:
    """Download ``url`` to ``target`` atomically; raise OSError/DataError on any failure."""
    expected = entry.decompressed_sha256 or entry.sha256
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        tmp = pathlib.Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _copy_hashed(
                    response, out, compress=entry.decompressed_sha256 is not None
                )
                out.flush()
                os.fsync(out.fileno())
            if actual != expected:
                raise DataError(
                    f"{url}: sha256 {actual} does not match the expected {expected}"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    # The content was verified while streaming; remember that for this exact file.
    _VERIFIED.add(_cache_key(target, entry))


def _download(entry: DataFile, target: pathlib.Path) -> str | None:
    """Try every URL of ``entry``; return None on success, else a one-line reason."""
    reasons: list[str] = []
    for url in entry.urls:
        try:
            _download_one(url, target, entry)
        except DataError as exc:
            reasons.append(str(exc))
        except (
            OSError,
            ValueError,
        ) as exc:  # URLError/HTTPError/timeouts are OSErrors.
            reasons.append(f"{url}: {type(exc).__name__}: {exc}")
        else:
            return None
    return "; ".join(reasons)


def _format_dirs(dirs: Iterable[pathlib.Path]) -> str:
    return "[" + ", ".join(str(d) for d in dirs) + "]"


def find_file(
    name: str,
    data_dir: PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> pathlib.Path:
    """Locate (and if needed download) a registered data file and verify its sha256.

    The first existing ``dir / name`` over :func:`resolve_data_dirs` wins; a corrupted
    file there is an error, not a reason to look further. If the file exists nowhere,
    it is downloaded into ``data_dir`` (if given) or ``./data``.

    Args:
        name: A key of :data:`REGISTRY`, e.g. ``"binarized_mnist_test.amat.gz"``.
        data_dir: An explicit data directory, searched first.
        download: Whether to try the upstream URLs when the file is missing.
        verify: Whether to check the sha256 of a file found locally.

    Returns:
        The path of the file.

    Raises:
        DataError: If ``name`` is unknown, the file is corrupted, or it is missing and
            could not be downloaded. The message is one line.
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise DataError(
            f"data file {name!r} is not in the registry; known files: {', '.join(sorted(REGISTRY))}"
        )
    dirs = resolve_data_dirs(data_dir)
    for directory in dirs:
        path = directory / name
        if path.is_file():
            if verify:
                _verify(path, entry)
            return path

    if not download:
        reason = "downloads are disabled"
    elif not entry.urls:
        reason = "no upstream URL is known for this file"
    else:
        if data_dir is not None and str(data_dir):
            base = pathlib.Path(data_dir).expanduser().absolute()
        else:
            base = pathlib.Path.cwd() / "data"
        target = base / name
        failure = _download(entry, target)
        if failure is None:
            return target
        reason = failure
    raise DataError(
        f"data file {name} (sha256 {entry.sha256}) not found in {_format_dirs(dirs)}; "
        f"download failed ({reason}). Put it in one of those directories, "
        f"or pass --data_dir / set {_ENV_VAR}"
    )
