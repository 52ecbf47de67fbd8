"""Where the raw data files are, and the one-line error when one is missing.

The raw files (described in the shared data README) are looked up in, in
order, an explicit ``data_dir``, ``$VMA_DATA_DIR`` and ``./data``. Checking
their sha256 and turning them into arrays is tensorflow-datasets' job
(:mod:`vma_tf.data.tfds_data`); this module only finds them and words the
error. It uses only the standard library, so launchers can import it before
TensorFlow.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable

__all__ = ["DATASET_FILES", "SHA256", "DataError", "locate", "resolve_data_dirs"]

_ENV_VAR = "VMA_DATA_DIR"

PathLike = str | os.PathLike[str]

SHA256: dict[str, str] = {
    "binarized_mnist_train.amat.gz": "af247bd6075cf9adc4715459dcd5f13eaa99a2c92d8d81379a05da94770b6c0e",
    "binarized_mnist_valid.amat.gz": "533b71bc0198f4d73c54ae5fe6c96fc08dc3cf1b3fae24c5521dbc0452507e38",
    "binarized_mnist_test.amat.gz": "32a3c54d03504632bf9f131b4a148c7567aa6fc87da017049b044bdc14c2a0f2",
    "mnist_idx/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist_idx/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist_idx/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist_idx/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "omniglot105_background.npz": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "omniglot105_evaluation.npz": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
    "omniglot_characters.csv": "fd10579ba9e544c91ff7f79173b7180d60fb2be4ab641a2caebfcae4830c8c8b",
    "omniglot28_background.npz": "136ac9970475ee96cb03275a4299233ef7d0f023380d2eff4ca73b31cc2f97da",
    "omniglot28_evaluation.npz": "5ac797844c90af132a423614c198f7b83ef8fad7cf8d32d6dc4f24483d317ac3",
}
"""sha256 of each raw file as it is stored in a data directory (named in errors).

tfds checks what it reads against its own registered checksums: those of the
uncompressed ``.amat`` files for ``binarized_mnist``, these same values for the
``mnist_idx`` files and (``vma_tf/data/checksums.tsv``) the Omniglot files.
"""

_OMNIGLOT28 = ("omniglot28_background.npz", "omniglot28_evaluation.npz")
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "binarized_mnist": tuple(
        f"binarized_mnist_{s}.amat.gz" for s in ("train", "valid", "test")
    ),
    "mnist": tuple(name for name in SHA256 if name.startswith("mnist_idx/")),
    "omniglot_fewshot": (
        "omniglot105_background.npz",
        "omniglot105_evaluation.npz",
        "omniglot_characters.csv",
    ),
    "omniglot_gmn": _OMNIGLOT28,
    "omniglot_bgeval": (
        "omniglot105_background.npz",
        "omniglot105_evaluation.npz",
        "omniglot_characters.csv",
    ),
    "omniglot_learned": _OMNIGLOT28,
}
"""Raw files each dataset is prepared from (keys are ``--dataset`` values, plus
``mnist`` for the large-memory protocol)."""


class DataError(Exception):
    """A data file is missing, corrupted or unreadable. The message is always one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


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


def _format_dirs(dirs: Iterable[pathlib.Path]) -> str:
    return "[" + ", ".join(str(d) for d in dirs) + "]"


def locate(
    names: Iterable[str], data_dir: PathLike | None = None
) -> dict[str, pathlib.Path]:
    """Find raw data files (not their content: tfds checks that when preparing).

    Each name is looked up on its own: the first existing ``dir / name`` over
    :func:`resolve_data_dirs` wins.

    Args:
        names: Keys of :data:`SHA256`, e.g. ``"binarized_mnist_test.amat.gz"``.
        data_dir: An explicit data directory, searched first.

    Returns:
        ``name -> path`` for every name.

    Raises:
        DataError: One line naming every missing file with its sha256, the
            directories searched and how to point at another one.
    """
    dirs = resolve_data_dirs(data_dir)
    found: dict[str, pathlib.Path] = {}
    missing: list[str] = []
    for name in names:
        if name not in SHA256:
            raise DataError(f"data file {name!r} is not known to vma_tf")
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        if path is None:
            missing.append(f"{name} (sha256 {SHA256[name]})")
        else:
            found[name] = path
    if missing:
        raise DataError(
            f"data file{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"not found in {_format_dirs(dirs)}. Put "
            f"{'them' if len(missing) > 1 else 'it'} in one of those directories, "
            f"or pass --data_dir / set {_ENV_VAR}"
        )
    return found
