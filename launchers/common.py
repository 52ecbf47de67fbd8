"""Shared launcher helpers: one-line errors and the config flags generated
from the schema (`vma_tf.configs.FIELDS`), and a quiet TensorFlow start
(`import_tensorflow_quietly`). No TensorFlow import at module level.

`define_config_flags` defines, for every config field, `--config.SECTION.NAME`
(e.g. `--config.model.memory_size=32`, in the manner of ml_collections'
config_flags) and, for the fields marked `short` in the schema, the flat
`--NAME` (`--memory_size=32`). Both default to None (keep the preset's value);
setting both for one field is an error. The short flags belong to the calling
launcher (its `--help`); the dotted ones are listed by `--helpfull`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from absl import flags

from vma_tf import configs
from vma_tf.configs import BASELINES, FIELDS, FIELDS_BY_NAME, ConfigError, FieldSpec

# Flags defined by the functions below belong to the launcher calling them.
flags.disclaim_key_flags()

# Generated flag name -> its field (None: the legacy --baseline).
_CONFIG_FLAGS: dict[str, FieldSpec | None] = {}


def fail(message: str) -> NoReturn:
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run(main, flags_parser=parse_flags)`: a flag that does not parse
    (unknown name, wrong type, value outside an enum) is one `error:` line and
    exit 2, like every other bad input (absl's default prints two lines and
    exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(" ".join(str(e).split()))


def check_common(argv, workdir: str | None, what: str) -> None:
    """Rejects positional arguments and a missing `--workdir`."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    if not workdir:
        fail(f"--workdir is required ({what})")


class _IntListParser(flags.ArgumentParser):
    """`256,128` -> `(256, 128)`, an empty value -> `()`; anything else is
    refused at parse time."""

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            return tuple(argument)
        if not argument.strip():
            return ()
        try:
            return tuple(int(v) for v in argument.split(","))
        except ValueError:
            raise ValueError("must be comma-separated integers") from None

    def flag_type(self) -> str:
        return "comma separated list of integers"


def _define(name: str, spec: FieldSpec, module_name: str | None, fv) -> None:
    args = {"flag_values": fv, "module_name": module_name}
    if spec.choices and spec.type is str:
        flags.DEFINE_enum(name, None, list(spec.choices), spec.help, **args)
    elif spec.type is bool:
        flags.DEFINE_boolean(name, None, spec.help, **args)
    elif spec.type is int:
        flags.DEFINE_integer(name, None, spec.help, **args)
    elif spec.type is float:
        flags.DEFINE_float(name, None, spec.help, **args)
    elif spec.type is tuple:
        serializer = flags.CsvListSerializer(",")
        flags.DEFINE(
            _IntListParser(), name, None, spec.help, serializer=serializer, **args
        )
    else:
        flags.DEFINE_string(name, None, spec.help, **args)
    _CONFIG_FLAGS[name] = spec


def define_config_flags(
    default_preset: str,
    short: Iterable[str] | None = None,
    config_json: bool = True,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> None:
    """Defines `--preset`, `--config_json` and the config field flags.

    Args:
        default_preset: default of `--preset`.
        short: names of the flat flags (default: every `short` field of the
            schema, plus the legacy `--baseline`).
        config_json: also define `--config_json` (start from a saved config).
        flag_values: where to define them.
    """
    fv = flag_values
    flags.DEFINE_string(
        "preset", default_preset, "Named experiment preset.", flag_values=fv
    )
    if config_json:
        flags.DEFINE_string(
            "config_json",
            None,
            "Start from this config.json instead of --preset (e.g. a tuned config).",
            flag_values=fv,
        )
    names = [s.name for s in FIELDS.values() if s.short] if short is None else short
    for name in names:
        _define(name, FIELDS_BY_NAME[name], None, fv)
    if short is None:
        flags.DEFINE_enum(
            "baseline",
            None,
            list(BASELINES),
            "Legacy: --baseline=geometric is --estimator=vimco_geometric.",
            flag_values=fv,
        )
        _CONFIG_FLAGS["baseline"] = None
    for spec in FIELDS.values():
        _define(f"config.{spec.key}", spec, __name__, fv)


def define_train_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The flags of `launchers.train`: the config flags (`--preset`
    mnist_recall), `--workdir` and `--progress` (also for a launcher that
    parses a training command, `launchers.reproduce`)."""
    define_config_flags("mnist_recall", flag_values=flag_values)
    flags.DEFINE_string(
        "workdir",
        None,
        "Run directory (created; resumed if it holds a checkpoint).",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "progress", True, "Show a progress bar.", flag_values=flag_values
    )


def config_overrides(
    flag_values: flags.FlagValues = flags.FLAGS,
) -> dict[str, tuple[str, Any]]:
    """`{"SECTION.NAME": (flag, value)}` of the config flags that are set
    (`"baseline"` for the legacy flag).

    Raises:
        ConfigError: two flags set the same field.
    """
    out: dict[str, tuple[str, Any]] = {}
    for name, spec in _CONFIG_FLAGS.items():
        if name not in flag_values or flag_values[name].value is None:
            continue
        key = "baseline" if spec is None else spec.key
        value = flag_values[name].value
        if key in out:
            first, before = out[key]
            raise ConfigError(
                f"--{first}={before} and --{name}={value} both set {key}; "
                "pass one of them"
            )
        out[key] = (name, value)
    return out


def given_fields(flag_values: flags.FlagValues = flags.FLAGS) -> frozenset[str] | None:
    """The `"section.name"` config fields the command line sets (for
    `workdir.preflight(given=...)`: a resumed run keeps its own value of a
    resumable field not given); None with `--config_json` (all of it given)."""
    if "config_json" in flag_values and flag_values["config_json"].value:
        return None
    keys = config_overrides(flag_values)
    return frozenset("model.estimator" if k == "baseline" else k for k in keys)


def build_config(
    flag_values: flags.FlagValues = flags.FLAGS,
    refuse: Mapping[str, str] | None = None,
) -> configs.Config:
    """The config the flags ask for: `--config_json` (if defined and set) or
    `--preset`, with the set config flags applied (not yet validated).

    Args:
        refuse: `{"SECTION.NAME": reason}`: fields this launcher does not use;
            setting one is `ConfigError("--FLAG reason")`.

    Raises:
        ConfigError: unknown preset, unreadable config_json, a refused or
            doubly set field, or a value the override refuses.
    """
    overrides = config_overrides(flag_values)
    for key, reason in (refuse or {}).items():
        if key in overrides:
            raise ConfigError(f"--{overrides[key][0]} {reason}")
    path = flag_values["config_json"].value if "config_json" in flag_values else None
    if path and flag_values["preset"].present:
        raise ConfigError(
            f"--preset={flag_values.preset} and --config_json={path}: give one "
            "(the config names its preset)"
        )
    base = configs.load_json(path) if path else configs.get_preset(flag_values.preset)
    return configs.override(base, **{k: v for k, (_, v) in overrides.items()})


# TensorFlow's native start-up notices on a CPU-only machine. They are
# written straight to file descriptor 2 before absl::InitializeLog(), so
# TF_CPP_MIN_LOG_LEVEL does not filter them (measured with TF 2.21).
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and finds its devices with file descriptor 2
    captured, then writes back every captured line except the known
    start-up notices (`_STARTUP_NOISE`): a CPU-only start prints nothing, and
    anything else TensorFlow says still reaches stderr. TF's Python logger
    is set to WARNING. `VMA_TF_LOGS=1` keeps every line and INFO."""
    if os.environ.get("VMA_TF_LOGS") == "1" or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    from absl import logging as absl_logging

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            # TF's Python INFO lines (e.g. absl's "Sharding callback
            # duration" on every checkpoint) would break into the progress bar.
            tf.get_logger().setLevel("WARNING")
            absl_logging.set_verbosity(absl_logging.WARNING)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            for line in text.splitlines(keepends=True):
                if not any(noise in line for noise in _STARTUP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()
