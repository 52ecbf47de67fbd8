"""Writing an export: the `keras.export.ExportArchive`, its version
directory (written atomically) and `assets.extra/vma_export.json`."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import keras

from vma_tf.errors import ExportError
from vma_tf.experiment import load_run
from vma_tf.export.signatures import ServingFunctions
from vma_tf.workdir import new_mode

EXPORT_METADATA = "assets.extra/vma_export.json"


def build_archive(model, x_shape):
    """A `keras.export.ExportArchive` with every signature of `model`.

    Args:
        model: a built `VMA`, `VAE` or `SoftAttentionVAE`.
        x_shape: shape of one example.

    Returns:
        `(archive, functions)`: the archive and its `ServingFunctions`.
    """
    functions = ServingFunctions(model, x_shape)
    if not model.variables:
        raise ExportError("the model has no variables yet (build it first)")
    # Subclassed models create their variables in `compute_terms`, not in
    # `build`; mark them built so the archive accepts them.
    model.built = True
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, specs) in functions.signatures.items():
        archive.add_endpoint(name, fn, input_signature=specs)
    return archive, functions


def read_metadata(path) -> dict:
    """The `assets.extra/vma_export.json` of an exported version directory."""
    return json.loads((pathlib.Path(path) / EXPORT_METADATA).read_text())


def version_dir(export_dir, version: int) -> pathlib.Path:
    """`export_dir/<version>`; raises `ExportError` if it already exists."""
    path = pathlib.Path(export_dir).expanduser() / str(int(version))
    if path.exists():
        raise ExportError(
            f"{path} already exists; refusing to overwrite (choose another --version)"
        )
    return path


def _temporary_dir(target: pathlib.Path) -> pathlib.Path:
    """A hidden new directory next to `target` (its parent created).

    Its mode is that of any new directory (0777 less the umask), not
    `mkdtemp`'s 0700: it becomes the version directory, which a model server
    running as another user must be able to read.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent)
        os.chmod(tmp, new_mode(0o777))
        return pathlib.Path(tmp)
    except OSError as e:
        raise ExportError(f"cannot write to {target.parent}: {e.strerror}") from None


def _write_version(model, x_shape, tmp: pathlib.Path, info: dict) -> None:
    """The SavedModel and its metadata (`info` merged in) into `tmp`."""
    archive, functions = build_archive(model, x_shape)
    archive.write_out(str(tmp), verbose=False)
    meta = tmp / EXPORT_METADATA
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({**functions.metadata(), **info}, indent=2) + "\n")


def export_model(model, x_shape, export_dir, version: int, extra=None):
    """Writes `model` to `export_dir/<version>` atomically.

    The SavedModel is written to a hidden temporary directory next to the
    target and renamed into place, so a server watching `export_dir` never
    sees a partial version.

    Args:
        model: a built model.
        x_shape: shape of one example.
        export_dir: the model base path (created if missing).
        version: positive integer version.
        extra: optional dict merged into `assets.extra/vma_export.json`.

    Returns:
        The `pathlib.Path` of the version directory.

    Raises:
        ExportError: the version directory exists or cannot be written.
    """
    if int(version) < 1:
        raise ExportError(f"version must be >= 1; got {version}")
    target = version_dir(export_dir, version)
    tmp = _temporary_dir(target)
    try:
        _write_version(model, x_shape, tmp, {"version": int(version), **(extra or {})})
        try:
            os.rename(tmp, target)  # Fails if target appeared meanwhile.
        except OSError:
            raise ExportError(
                f"{target} already exists; refusing to overwrite"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_run(workdir, export_dir, version: int | None = None):
    """Exports the newest checkpoint of a training run.

    Args:
        workdir: a run directory written by `train_and_evaluate`.
        export_dir: model base path; the model goes to `export_dir/<version>`.
        version: version number (default: the checkpoint's step).

    Returns:
        `(path, step)`.

    Raises:
        WorkdirError: not a run / no checkpoint. ExportError: see
        `export_model`.
    """
    if version is not None:
        version_dir(export_dir, version)  # Fail before loading anything.
    config, model, data, step = load_run(workdir)
    version = step if version is None else version
    path = export_model(
        model,
        data.x_shape,
        export_dir,
        version,
        extra={"preset": config.name, "step": step, "workdir": str(workdir)},
    )
    return path, step
