"""`override(config, **values)`: a config with some fields replaced, and
`load_json` for saved configs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vma_tf.configs.fields import (
    FIELDS,
    FIELDS_BY_NAME,
    FieldSpec,
    episode_sizes,
    flag_name,
)
from vma_tf.configs.schema import BASELINES, VIMCO_ESTIMATORS, Config, ConfigError
from vma_tf.configs.validation import check_choice


def field_spec(key: str) -> FieldSpec:
    """The field named by `key`: `"memory_size"` or `"model.memory_size"`."""
    spec = FIELDS.get(key) or FIELDS_BY_NAME.get(key)
    if spec is None:
        raise ConfigError(
            f"unknown config field {key!r}; known: "
            f"{', '.join(sorted(FIELDS_BY_NAME))} (or SECTION.NAME)"
        )
    return spec


def override(config: Config, **values: Any) -> Config:
    """Returns `config` with fields replaced.

    Keys are field names (`memory_size`), dotted `SECTION.NAME` keys
    (`**{"model.memory_size": 32}`) or the legacy `baseline` (`"geometric"`
    turns vimco into vimco_geometric). `None` values are ignored, so unset
    flags keep the base config's value. For episodes, `batch_size` and
    `memory_size` are derived from the episode (a different value is an error).
    """
    sections: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "train": {}}
    baseline = values.pop("baseline", None)
    for key, value in values.items():
        if value is None:
            continue
        spec = field_spec(key)
        if spec.name in sections[spec.section]:
            raise ConfigError(f"config field {spec.key} is set twice ({key!r})")
        sections[spec.section][spec.name] = value
    if baseline is not None:
        _apply_baseline(baseline, config, sections["model"])
    config = dataclasses.replace(
        config,
        **{
            name: dataclasses.replace(getattr(config, name), **changes)
            for name, changes in sections.items()
        },
    )
    if config.data.task == "episodes":
        config = _derive_episode(config, sections)
    return config


def _apply_baseline(baseline: str, config: Config, model: dict[str, Any]) -> None:
    """The legacy `--baseline`: geometric means `--estimator=vimco_geometric`,
    arithmetic `--estimator=vimco` (also over a geometric base config); an
    estimator given beside it must be that one."""
    check_choice("baseline", baseline, BASELINES)
    wanted = "vimco_geometric" if baseline == "geometric" else "vimco"
    given = model.get("estimator")
    estimator = config.model.estimator if given is None else given
    if estimator not in VIMCO_ESTIMATORS or given not in (None, wanted):
        raise ConfigError(
            f"--baseline={baseline} is VIMCO's leave-one-out baseline of "
            f"--estimator={wanted}; it conflicts with --estimator={estimator}"
        )
    model["estimator"] = wanted


def _derive_episode(config: Config, sections: dict[str, dict[str, Any]]) -> Config:
    derived = episode_sizes(config.data)
    for (section, name), value in zip(
        (("train", "batch_size"), ("model", "memory_size")), derived
    ):
        given = sections[section].get(name)
        if given is not None and given != value:
            raise ConfigError(
                f"--{flag_name(section, name)}={given} conflicts with the "
                f"episode: it is derived as {value} from --batch_classes, "
                "--targets_per_class, --memory_per_class and --confounder_classes"
            )
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, batch_size=derived[0]),
        model=dataclasses.replace(config.model, memory_size=derived[1]),
    )


def load_json(path: str, flag: str = "config_json") -> Config:
    """Reads a `config.json` (e.g. `best_config.json` of a search).

    Raises:
        ConfigError: unreadable or not a config, naming `--flag=path`.
    """
    try:
        with open(path) as f:
            return Config.from_dict(json.load(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--{flag}={path}: {e}") from None
