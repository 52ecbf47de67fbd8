"""The schema as data: a `FieldSpec` per config field (section, type, help,
choices, bounds; from the dataclasses' field metadata), the flag that names
each field in errors, and sizes derived from a config."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from vma_tf.configs.schema import (
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
# Field annotations (strings: `from __future__ import annotations`) -> the
# type a flag parses (`tuple`: a comma-separated list of integers).
_TYPES = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "str | None": str,
    "float | None": float,
    "tuple[int, ...]": tuple,
}


class FieldSpec(NamedTuple):
    """One config field: where it lives, its type and its metadata."""

    section: str
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...]
    short: bool
    minimum: float | None
    positive: bool
    resumable: bool

    @property
    def key(self) -> str:
        """`"section.name"`, the dotted override key."""
        return f"{self.section}.{self.name}"

    @property
    def flag(self) -> str:
        """The flag errors name: `NAME` if short, else `config.SECTION.NAME`."""
        return self.name if self.short else f"config.{self.key}"


def _specs() -> dict[str, FieldSpec]:
    specs = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            specs[f"{section}.{f.name}"] = FieldSpec(
                section, f.name, _TYPES[f.type], f.default, **f.metadata
            )
    return specs


# `"section.name" -> FieldSpec` for every field, and by the (unique) name.
FIELDS: dict[str, FieldSpec] = _specs()
FIELDS_BY_NAME: dict[str, FieldSpec] = {s.name: s for s in FIELDS.values()}
assert len(FIELDS_BY_NAME) == len(FIELDS), "field names must be unique"
RESUMABLE_FIELDS = {(s.section, s.name) for s in FIELDS.values() if s.resumable}


def flag_name(section: str, name: str) -> str:
    """The flag naming `section.name` in errors (see `FieldSpec.flag`)."""
    return FIELDS[f"{section}.{name}"].flag


def x_shape(config: Config) -> tuple[int, ...]:
    """Shape of one example of `config`'s dataset."""
    dataset = config.data.dataset
    if dataset == "binarized_mnist":
        return (784,)
    if dataset in ("omniglot_fewshot", "omniglot_bgeval"):
        return (26, 26, 1)
    return (28, 28, 1)


def periodic_splits(config: Config) -> tuple[str, ...]:
    """Names of the evaluations `config`'s training runs every `eval_every`
    steps, as its `metrics.jsonl` rows name them: `valid` on binarized MNIST
    (recall adds `valid_m{N}` for an `eval_memory_size` N other than the
    memory's), `test` on Omniglot. The first is the one the patience rule
    and the reporting tools read by default (`time_to_quality.plateau_split`)."""
    m, d = config.model, config.data
    if d.dataset != "binarized_mnist":
        return ("test",)
    if m.kind == "vma" and d.task == "recall":
        sizes = [d.eval_memory_size] if d.eval_memory_size else []
        return ("valid", *(f"valid_m{n}" for n in sizes if n != m.memory_size))
    return ("valid",)


def episode_sizes(data: DataConfig) -> tuple[int, int]:
    """`(batch_size, memory_size)` of a few-shot episode."""
    return (
        data.batch_classes * data.targets_per_class,
        (data.batch_classes + data.confounder_classes) * data.memory_per_class,
    )
