"""Run-directory checks, locking and atomic writes (no TensorFlow import).

`preflight(config, workdir)` runs every check that can fail on user input —
config values, the workdir, the data files — before anything is written, so
launchers can report one clean error line before TensorFlow even loads.
`check_data_files(config)` and `check_output_file(flag, path)` are the data
and output-path parts, for launchers without a workdir (launchers.benchmark).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import re
import tempfile
from typing import Collection, Iterator

from vma_tf import configs
from vma_tf.configs import Config, ConfigError
from vma_tf.errors import WorkdirError


def new_mode(base: int) -> int:
    """`base` (0o666 for a file, 0o777 for a directory) less the umask: the
    mode `open`/`mkdir` give a new file or directory, for the files that
    `mkstemp`/`mkdtemp` make private (0600/0700) but others must read."""
    umask = os.umask(0)  # Reading the umask means setting it: put it back.
    os.umask(umask)
    return base & ~umask


def atomic_write(path: pathlib.Path, text: str) -> None:
    """Writes `text` to `path` via a temporary file and `os.replace`.

    The file gets the mode of any new file (0666 less the umask), not
    `mkstemp`'s 0600: other users who can read a run's checkpoints must be
    able to read its config.json and metrics.jsonl to evaluate it. On any
    failure (e.g. a full disk) the temporary file is removed and the error
    re-raised; `path` is left as it was.

    Args:
        path: The file to write (its directory must exist).
        text: Its whole new content.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            # On disk before the rename: no empty file after a crash.
            os.fsync(f.fileno())
        os.chmod(tmp, new_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def numbered_checkpoints(directory: str | os.PathLike) -> list[str]:
    """Checkpoint prefixes (`.../ckpt-N`) in `directory`, newest (highest N)
    first.

    Read from the `*.index` files themselves, so a damaged `checkpoint`
    state file does not hide older checkpoints (no TensorFlow import).
    """
    found = []
    for index in pathlib.Path(directory).glob("*.index"):
        match = re.fullmatch(r"(.+)-(\d+)", index.stem)
        if match:
            found.append((int(match.group(2)), str(index.with_suffix(""))))
    return [path for _, path in sorted(found, reverse=True)]


def read_config(path: pathlib.Path) -> tuple[dict, Config]:
    """A run's config.json: `(its raw JSON, the Config it reads as)`.

    Raises:
        WorkdirError: not JSON, or not a vma_tf config (one line).
    """
    try:
        raw = json.loads(path.read_text())
        return raw, Config.from_dict(raw)
    except (ValueError, ConfigError) as e:
        raise WorkdirError(f"{path} is not a readable vma_tf config ({e})") from None


def step_of(checkpoint: str | os.PathLike) -> int:
    """The step `N` a checkpoint prefix `.../ckpt-N` is numbered by."""
    return int(str(checkpoint).rpartition("-")[2])


def checkpoint_step(workdir: pathlib.Path) -> int:
    """The step of the newest checkpoint in `workdir/checkpoints` (0: none).

    What a resumed run restores and `launchers.evaluate` evaluates, read from
    the `*.index` file names alone (no TensorFlow): a newest checkpoint that
    cannot be read is still counted here, where training and `load_run` fall
    back to the one before (`checkpointing.restore_newest_valid`;
    `export_run` returns the step it restored). Its rows in `metrics.jsonl`
    may go further: the rows of a step are written before its checkpoint, so
    a run stopped in between logged a step it did not save.
    """
    paths = numbered_checkpoints(pathlib.Path(workdir, "checkpoints"))
    return step_of(paths[0]) if paths else 0


def read_summary(workdir: pathlib.Path) -> dict | None:
    """The run's summary.json (written after its final evaluation; its
    `"step"` is where that evaluation ran), or None if it is missing or not
    a readable JSON object."""
    try:
        summary = json.loads(pathlib.Path(workdir, "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def check_workdir(
    workdir: pathlib.Path, config: Config, given: Collection[str] | None = None
) -> Config:
    """Fails (nothing written) on an unusable workdir or another run's config.

    A resumed run must match its config.json but for the fields of
    `configs.RESUMABLE_FIELDS`. With `given` (the `"section.name"` fields set
    on the command line), a resumable field not given keeps the run's value
    (but those of where and how it executes: data_dir, strategy, jit,
    fast_convs, deterministic, keep_checkpoints; a change of one is printed):
    rerunning a run's command without, say, `--lr_drop_step` or
    `--precision` does not move its learning-rate drop or change its
    precision, and one given with a new value is printed.

    Args:
        given: the fields set explicitly; None: every field of `config` is
            meant as it is (a library caller's whole config).

    Returns:
        The config to run: `config`, but a data field the run's config.json
        predates (`configs.legacy_data_values`) that `config` leaves at its
        default keeps the value the run was made with, so a run resumed with
        its own command keeps its evaluation sets, on every resume. As the
        rewritten config.json holds that value, any run whose config.json
        holds a field's legacy value keeps it when `config` leaves the
        field at its default (also a run made with that value given
        explicitly: harmless, the evaluation sets it was made with). A value
        given on the command line is compared as any other field.
    """
    check_output_dir("--workdir", workdir)
    saved = workdir / "config.json"
    if not saved.exists():
        if numbered_checkpoints(workdir / "checkpoints"):
            raise WorkdirError(
                f"--workdir={workdir} holds checkpoints but no config.json, so "
                "the settings they were trained with are unknown; use another "
                "--workdir"
            )
        return config
    try:
        raw, old = read_config(saved)
    except WorkdirError as e:
        raise WorkdirError(f"{e}; use another --workdir") from None
    if old.name != config.name:
        raise WorkdirError(
            f"--workdir={workdir} holds a {old.name!r} run, not {config.name!r}"
        )
    # Also once config.json has been rewritten with the kept value (the run
    # resumed before): a field holding what a config.json predating it reads
    # as is treated as predating it.
    keep = {
        k: legacy
        for k, legacy in configs.legacy_data_values(raw).items()
        if getattr(old.data, k) == legacy
        and getattr(config.data, k) == configs.FIELDS[f"data.{k}"].default
        and (given is None or f"data.{k}" not in given)
    }
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **keep))
    if given is not None:
        config = _resume_settings(workdir, old, config, given)
    old_d, new_d = old.to_dict(), config.to_dict()
    for section in ("data", "model", "train"):
        for key, value in new_d[section].items():
            if (section, key) in configs.RESUMABLE_FIELDS:
                continue
            if old_d[section].get(key) != value:
                raise WorkdirError(
                    f"--workdir={workdir} holds a run with {section}.{key}="
                    f"{old_d[section].get(key)!r}, not {value!r}; use another "
                    "--workdir or the same flags to resume"
                )
    step = checkpoint_step(workdir)
    _check_trained_schedule(workdir, step, old.train, config.train)
    _check_init_from(workdir, step, old.train.init_from, config.train.init_from)
    return config


def _check_trained_schedule(
    workdir: pathlib.Path, step: int, old: configs.TrainConfig, new: configs.TrainConfig
) -> None:
    """Fails unless `new` gives the learning rate `old` gave at every step
    the run has trained (`0 .. step - 1`): a drop moved into the past would
    act from `step` on while config.json said it acted from the earlier step.

    Both schedules are constant but at their drop steps, so comparing them
    at step 0 and at each drop step before `step` compares every step.
    """
    points = {0} | {d for d in (old.lr_drop_step, new.lr_drop_step) if d}
    for s in sorted(p for p in points if p < step):
        if old.learning_rate_at(s) == new.learning_rate_at(s):
            continue
        changed = (
            "lr_drop_step" if old.lr_drop_step != new.lr_drop_step else "lr_after_drop"
        )
        raise ConfigError(
            f"--{changed}={getattr(new, changed)} would change the learning rate "
            f"of steps the run has trained (it ran at {old.learning_rate_at(s):g} "
            f"at step {s} with {changed}={getattr(old, changed)}, newest "
            f"checkpoint {step}); a new drop must be at or after step {step}"
        )


def _check_init_from(
    workdir: pathlib.Path, step: int, old: str | None, new: str | None
) -> None:
    """Fails if a run with checkpoints of its own is given another
    `--init_from` than it started with: it resumes from its own checkpoints
    (the flag would do nothing), and config.json must keep how it began."""
    if not step or old == new:
        return
    same = (
        old
        and new
        and pathlib.Path(old).expanduser().absolute()
        == (pathlib.Path(new).expanduser().absolute())
    )
    if not same:
        began = f"warm-started from {old}" if old else "started from scratch"
        raise ConfigError(
            f"--init_from={new or ''} given for a run that resumes from its own "
            f"checkpoint {step} ({began}); leave --init_from out or give the "
            "run's own to resume it"
        )


# Resumable fields that say where or how a run executes, not what it
# trains: a rerun leaving one out takes the command's value, not the run's.
_EXECUTION_FIELDS = frozenset(
    {
        ("data", "data_dir"),
        ("train", "strategy"),
        ("train", "jit"),
        ("model", "fast_convs"),
        ("train", "deterministic"),
        ("train", "keep_checkpoints"),
    }
)


def _resume_settings(
    workdir: pathlib.Path, old: Config, config: Config, given: Collection[str]
) -> Config:
    """`config` with each resumable field (but `_EXECUTION_FIELDS`) not in
    `given` set to the run's (`old`) value; prints each given one that
    changes the run's value, and each execution field that does."""
    sections = {}
    for section, name in sorted(configs.RESUMABLE_FIELDS):
        before = getattr(getattr(old, section), name)
        now = getattr(getattr(config, section), name)
        if before == now:
            continue
        if (section, name) in _EXECUTION_FIELDS:
            print(f"{workdir}: {section}.{name}={now!r} (the run had {before!r})")
        elif f"{section}.{name}" in given:
            print(f"{workdir}: {section}.{name}={now!r} given (the run has {before!r})")
        else:
            sections.setdefault(section, {})[name] = before
    return dataclasses.replace(
        config,
        **{
            k: dataclasses.replace(getattr(config, k), **v) for k, v in sections.items()
        },
    )


def check_output_dir(flag: str, path: str | os.PathLike) -> pathlib.Path:
    """Fails (nothing written) unless `path` is a directory that can be
    written or made: its nearest existing ancestor (itself, if it exists) is
    a writable directory.

    Args:
        flag: the flag named in the message, e.g. `"--out"`.

    Returns:
        The absolute path.
    """
    path = pathlib.Path(path).expanduser().absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise WorkdirError(
            f"{flag}={path} is not writable ({probe} is not a writable directory)"
        )
    return path


def check_output_file(flag: str, path: str | os.PathLike) -> pathlib.Path:
    """Fails (nothing written) unless `path` can be written as a file: its
    directory exists and is writable, and `path` is not a directory.

    Args:
        flag: the flag named in the message, e.g. `"--json"`.

    Returns:
        The absolute path.
    """
    given = f"{flag}={path}"
    path = pathlib.Path(path).expanduser().absolute()
    parent = path.parent
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise WorkdirError(f"{given}: {parent} {problem}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WorkdirError(f"{given}: directory {parent} is not writable")
    if path.is_dir():
        raise WorkdirError(f"{given} is a directory, not a file")
    return path


def check_tf_config(strategy: str, tf_config: str | None) -> None:
    """Fails unless `--strategy=multi_worker` has a usable `$TF_CONFIG`.

    Args:
        strategy: `config.train.strategy`; other strategies pass unchecked.
        tf_config: the value of `$TF_CONFIG`, or `None` if unset.

    Raises:
        ConfigError: `$TF_CONFIG` is unset, not JSON, or does not name a
            cluster and this process's task in it.
    """
    if strategy != "multi_worker":
        return
    if not tf_config:
        raise ConfigError("--strategy=multi_worker needs $TF_CONFIG (cluster and task)")
    try:
        value = json.loads(tf_config)
    except ValueError as e:
        raise ConfigError(f"$TF_CONFIG is not JSON ({e})") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not (isinstance(cluster, dict) and isinstance(task, dict)):
        raise ConfigError(
            '$TF_CONFIG must be {"cluster": {...}, "task": {"type": ..., '
            '"index": ...}} for --strategy=multi_worker'
        )
    members = cluster.get(task.get("type"))
    index = task.get("index", 0)
    if isinstance(index, str) and index.isdigit():  # TensorFlow takes "1" too.
        index = int(index)
    if not (
        isinstance(members, list)
        and isinstance(index, int)
        and 0 <= index < len(members)
    ):
        sizes = ", ".join(
            f"{kind}: {len(hosts)}"
            for kind, hosts in cluster.items()
            if isinstance(hosts, list)
        )
        raise ConfigError(
            f"$TF_CONFIG's task {task.get('type')!r} {index!r} is not in its "
            f"cluster ({sizes})"
        )


def check_data_files(config: Config) -> None:
    """Finds `config`'s dataset, preparing it in the tfds cache if it is not
    yet (tfds checks the raw files' sha256). Imports TensorFlow.

    Raises:
        vma_tf.data.files.DataError: a file is missing or corrupt.
    """
    from vma_tf.data import tfds_data  # Imports TensorFlow.

    tfds_data.prepare(config.data.dataset, config.data.data_dir)


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path) -> Iterator[None]:
    """Exclusive `flock` on `workdir/.lock`: two runs never share a workdir."""
    fd = os.open(workdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirError(
                f"--workdir={workdir} is in use by another run (lock held on .lock)"
            ) from None
        yield
    finally:
        os.close(fd)


def preflight(
    config: Config,
    workdir: str | os.PathLike,
    check_data: bool = True,
    given: Collection[str] | None = None,
) -> tuple[Config, pathlib.Path]:
    """Validates config, workdir and data.

    The dataset is prepared in the tfds cache if it is not yet (which checks
    the raw files' sha256); only this step imports TensorFlow (`check_data=
    False` skips it, for a launcher that starts TensorFlow its own way and
    then calls `check_data_files`).

    Args:
        given: the `"section.name"` fields set on the command line
            (`check_workdir`: a resumed run keeps its own value of a
            resumable field not given); None: all of `config`.

    Returns:
        `(config, workdir)`: the config to run (`check_workdir`: a resumed
        run keeps the settings its config.json predates, and with `given`
        those not given) and the absolute workdir.

    Raises:
        ConfigError / WorkdirError: bad values or workdir.
        vma_tf.data.files.DataError: missing or corrupt data files.
    """
    workdir = pathlib.Path(workdir).expanduser().absolute()
    if not (workdir / "config.json").exists():
        configs.validate(config)  # A new run: its values before the workdir's.
    # A resumed run is validated as it will run: with the settings it keeps.
    config = configs.validate(check_workdir(workdir, config, given))
    check_tf_config(config.train.strategy, os.environ.get("TF_CONFIG"))
    if config.train.init_from and not checkpoint_step(workdir):  # Will warm-start.
        source = pathlib.Path(config.train.init_from).expanduser()
        if not (source / "checkpoints").is_dir():
            raise WorkdirError(
                f"--init_from={config.train.init_from} is not a run directory "
                "with checkpoints"
            )
    if check_data:
        check_data_files(config)
    return config, workdir
