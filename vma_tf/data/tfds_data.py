"""Datasets served by tensorflow-datasets, prepared offline from the raw files.

* The raw files are found with :func:`vma_tf.data.files.locate` (``data_dir``,
  ``$VMA_DATA_DIR``, ``./data``); a missing one is a one-line `DataError`.
* They are staged in a fresh temporary ``manual_dir`` inside the cache:
  symlinks, or for binarized MNIST gunzipped copies (tfds registers the sha256
  of the uncompressed ``.amat`` files). tfds then finds each one there by its
  registered file name, checks size and sha256 (its own checksums for
  ``binarized_mnist`` and ``mnist``, ``vma_tf/data/checksums.tsv`` for the
  Omniglot builders) and writes the records. Nothing is downloaded.
* Preparation is atomic: tfds writes into an ``incomplete.*`` directory and
  renames it when done; an exclusive lock on ``<cache>/.lock`` serializes
  preparing processes, and leftovers of an interrupted one are removed by the
  next. Once prepared, a dataset is read from the cache and the raw files are
  no longer needed.
* The cache (:func:`cache_dir`) is ``$VMA_TFDS_DIR``, else
  ``$XDG_CACHE_HOME/vma_tf/tfds``, else ``~/.cache/vma_tf/tfds``.

tfds' own ``binarized_mnist`` and ``mnist`` builders store examples in the
order of ``md5(split name, row index)``; :func:`file_order` recomputes that
order with tfds' hasher so the loaders return the rows in file order.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import pathlib
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import hashing
from tensorflow_datasets.core.download.download_manager import (
    NonMatchingChecksumError,
)

from vma_tf.data import omniglot_builders
from vma_tf.data.files import DATASET_FILES, SHA256, DataError, PathLike, locate

__all__ = ["builder", "cache_dir", "file_order", "prepare", "read_split"]

_ENV_VAR = "VMA_TFDS_DIR"
_BUILDERS = {
    "omniglot_fewshot": omniglot_builders.OmniglotFewshot26,
    "omniglot_gmn": omniglot_builders.OmniglotGmn28,
    "omniglot_bgeval": omniglot_builders.OmniglotBgEval26,
    "omniglot_learned": omniglot_builders.OmniglotLearned28,
}
_TFDS_NAMES = ("binarized_mnist", "mnist")  # tfds' own builders.


def cache_dir() -> pathlib.Path:
    """The writable directory holding tfds' prepared datasets.

    Returns:
        ``$VMA_TFDS_DIR`` if set, else ``$XDG_CACHE_HOME/vma_tf/tfds``, else
        ``~/.cache/vma_tf/tfds``, made absolute.
    """
    env = os.environ.get(_ENV_VAR)
    if env:
        return pathlib.Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser().absolute() / "vma_tf" / "tfds"


def builder(dataset: str) -> tfds.core.DatasetBuilder:
    """The (maybe not yet prepared) tfds builder of a dataset, on :func:`cache_dir`.

    Args:
        dataset: A key of :data:`vma_tf.data.files.DATASET_FILES`.
    """
    data_dir = str(cache_dir())
    if dataset in _TFDS_NAMES:
        return tfds.builder(dataset, data_dir=data_dir)
    return _BUILDERS[dataset](data_dir=data_dir)


def _is_prepared(candidate: tfds.core.DatasetBuilder) -> bool:
    """tfds' `is_prepared`, without its stderr warning for a folder not prepared yet."""
    info = candidate.data_path / "dataset_info.json"
    return info.exists() and candidate.is_prepared()


@contextlib.contextmanager
def _locked(root: pathlib.Path) -> Iterator[None]:
    """Exclusive `flock` on ``root/.lock`` (blocks until free).

    Raises:
        DataError: ``root`` cannot be created or written (e.g.
            ``$VMA_TFDS_DIR`` names a regular file).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataError(
            f"{root}: the tfds cache is not a writable directory ({exc.strerror}); "
            f"set ${_ENV_VAR} to one"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(root: pathlib.Path) -> None:
    """Staging and incomplete directories of interrupted runs (call under the lock)."""
    for path in [*root.glob("staging.*"), *root.glob("*/incomplete.*")]:
        shutil.rmtree(path, ignore_errors=True)


def _stage(files: dict[str, pathlib.Path], manual: pathlib.Path) -> dict[str, str]:
    """Put the raw files in ``manual`` under the names tfds registers.

    Args:
        files: ``raw name -> path`` from :func:`vma_tf.data.files.locate`.
        manual: An empty directory.

    Returns:
        ``staged path -> raw name``.

    Raises:
        DataError: A ``.amat.gz`` file cannot be decompressed.
    """
    staged = {}
    for name, src in files.items():
        target = manual / pathlib.PurePath(name).name
        if name.endswith(".amat.gz"):
            target = target.with_suffix("")  # tfds registers the plain .amat.
            try:
                with gzip.open(src, "rb") as f_in, open(target, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out, 1 << 20)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(
                    f"{src}: cannot be decompressed ({type(exc).__name__}: {exc}); "
                    f"expected sha256 {SHA256[name]} — delete it and put a good copy there"
                ) from None
        else:
            target.symlink_to(src.resolve())
        staged[str(target)] = name
    return staged


def _checksum_error(
    exc: Exception, files: dict[str, pathlib.Path], staged: dict[str, str]
) -> DataError:
    """One line naming the raw file tfds rejected, from tfds' error."""
    message = str(exc)
    for path, name in staged.items():
        if f"downloaded to {path}," in message:
            what = "uncompressed content" if name.endswith(".amat.gz") else "content"
            return DataError(
                f"{files[name]}: its {what} does not match the sha256 tfds has "
                f"registered for it; the file should have sha256 {SHA256[name]} — "
                "it is corrupted or truncated, delete it and put a good copy there"
            )
    return DataError(message)


def prepare(dataset: str, data_dir: PathLike | None = None) -> tfds.core.DatasetBuilder:
    """The prepared builder of a dataset, preparing it from the raw files if needed.

    Args:
        dataset: A key of :data:`vma_tf.data.files.DATASET_FILES`.
        data_dir: An explicit raw-data directory, searched before
            ``$VMA_DATA_DIR`` and ``./data`` (only read when preparing).

    Returns:
        The builder, with its splits on disk under :func:`cache_dir`.

    Raises:
        DataError: A raw file is missing, corrupted or truncated, or the cache
            is not a writable directory (one line).
    """
    name = dataset if dataset in _TFDS_NAMES else _BUILDERS[dataset].name
    files = None
    if not (cache_dir() / name).is_dir():
        # Not prepared: missing raw files fail before anything is written
        # (constructing an unprepared tfds builder leaves a directory in
        # $TMPDIR, from its attempt to read metadata from GCS).
        files = locate(DATASET_FILES[dataset], data_dir)
    result = builder(dataset)
    if _is_prepared(result):
        return result
    files = files or locate(DATASET_FILES[dataset], data_dir)
    root = cache_dir()
    with _locked(root):
        result = builder(dataset)  # Another process may have prepared it.
        if _is_prepared(result):
            return result
        _remove_leftovers(root)
        tfds.disable_progress_bar()  # Preparing prints no progress bars.
        manual = pathlib.Path(tempfile.mkdtemp(prefix="staging.", dir=root))
        try:
            staged = _stage(files, manual)
            config = tfds.download.DownloadConfig(
                manual_dir=str(manual), try_download_gcs=False
            )
            result.download_and_prepare(download_config=config)
        except NonMatchingChecksumError as exc:
            raise _checksum_error(exc, files, staged) from None
        finally:
            shutil.rmtree(manual, ignore_errors=True)
    return builder(dataset)


def read_split(prepared: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
    """All examples of one split, in the order of the prepared records.

    The decoded arrays are kept next to the records (``vma_arrays-<split>.npz``)
    for the next call; a damaged copy (e.g. truncated) is deleted, with one line
    on stderr, and the split decoded again.

    Args:
        prepared: A prepared builder, e.g. from :func:`prepare`.
        split: A split name of the builder, e.g. ``"train"``.

    Returns:
        ``feature name -> [N, ...]`` arrays (text features as bytes objects).
    """
    cached = pathlib.Path(prepared.data_dir) / f"vma_arrays-{split}.npz"
    if cached.is_file():
        try:
            return _load_decoded(cached)
        except _LOAD_ERRORS as exc:
            # Damaged (e.g. truncated): decoded again below, and rewritten.
            with contextlib.suppress(OSError):
                cached.unlink()
            print(
                f"{cached}: unreadable ({type(exc).__name__}: {exc}); "
                "deleted, decoding the split again from the records",
                file=sys.stderr,
            )
    read_config = tfds.ReadConfig(interleave_cycle_length=1)  # Shards in order.
    ds = prepared.as_dataset(split=split, shuffle_files=False, read_config=read_config)
    batches = list(tfds.as_numpy(ds.batch(8192)))
    arrays = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    _save_decoded(cached, arrays)
    return arrays


_OBJECT_KEYS = "__object_keys__"  # Arrays of bytes objects, stored as `S`.
# What `_load_decoded` raises on a damaged file.
_LOAD_ERRORS = (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError)


def _save_decoded(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes a decoded split next to its records, atomically and without
    pickle (bytes objects become fixed-width `S` arrays). Decoding the PNG
    records of binarized MNIST takes seconds in every process; loading this
    file, a fraction of one. Best effort: an unwritable cache or a failed
    write (full disk, ``ulimit -f``) is skipped, its temporary file removed."""
    objects = [k for k, v in arrays.items() if v.dtype == object]
    plain = {k: v.astype(bytes) if k in objects else v for k, v in arrays.items()}
    plain[_OBJECT_KEYS] = np.array(objects, dtype=bytes)
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False
        ) as f:
            tmp = f.name
            np.savez(f, **plain)
            f.flush()
            os.fsync(f.fileno())  # On disk before it has its name.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        return
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _load_decoded(path: pathlib.Path) -> dict[str, np.ndarray]:
    """The arrays `_save_decoded` wrote (bytes objects restored)."""
    with np.load(path, allow_pickle=False) as saved:
        objects = {k.decode() for k in saved[_OBJECT_KEYS]}
        return {
            k: saved[k].astype(object) if k in objects else saved[k]
            for k in saved.files
            if k != _OBJECT_KEYS
        }


def file_order(split: str, num_examples: int) -> np.ndarray:
    """Row indices in the raw file of the records tfds' MNIST builders wrote.

    tfds' ``binarized_mnist`` and ``mnist`` builders key example ``i`` of a
    split by ``i`` (its row in the file) and write the examples sorted by
    ``md5(split name + str(i))`` (``tensorflow_datasets.core.hashing``).

    Args:
        split: The tfds split name (the hash salt), e.g. ``"validation"``.
        num_examples: N, the number of examples of the split.

    Returns:
        int64 `[N]`: entry k is the file row of the k-th record, so
        ``rows[file_order(...)] = records`` restores the file order.
    """
    hasher = hashing.Hasher(split)
    keys = [hasher.hash_key(i) for i in range(num_examples)]
    return np.array(sorted(range(num_examples), key=keys.__getitem__), np.int64)
