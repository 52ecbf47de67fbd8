"""`validate(config)`: every value checked before TensorFlow loads; each error
is one line naming the flag (`schema.FieldSpec.flag`)."""

from __future__ import annotations

import math
from typing import Any

from vma_tf.configs.fields import FIELDS, episode_sizes
from vma_tf.configs.schema import (
    DATASETS,
    EPISODIC_DATASETS,
    VIMCO_ESTIMATORS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

# Sizes of the splits the tasks draw from, for early, one-line errors:
# images for MNIST and the learned-memory Omniglot split, characters for the
# episodic Omniglot splits (20 drawers each).
SPLIT_SIZES = {
    "binarized_mnist": {"train": 50_000, "valid": 10_000, "test": 10_000},
    "omniglot_fewshot": {"train": 1479, "test": 144},
    "omniglot_gmn": {"train": 964, "test": 659},
    "omniglot_bgeval": {"train": 964, "test": 659},
    "omniglot_learned": {"train": 1623 * 15, "test": 1623 * 5},
}
assert tuple(SPLIT_SIZES) == DATASETS
DRAWERS_PER_CHARACTER = 20
# The data fields only episodes read (`data.omniglot.episode_batch_fn`).
_EPISODE_FIELDS = (
    "batch_classes",
    "targets_per_class",
    "memory_per_class",
    "confounder_classes",
    "absent_classes",
    "rotated_classes",
    "mixed_memory",
)


def check_choice(flag: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"--{flag}={value!r} is not allowed; choose one of "
            f"{', '.join(map(str, allowed))}"
        )


def check_at_least(flag: str, value: float, minimum: float, why: str = "") -> None:
    if not value >= minimum or not math.isfinite(value):  # NaN: not >=.
        raise ConfigError(f"--{flag}={value} must be >= {minimum}{why}")


def validate(config: Config) -> Config:
    """Checks every value; raises `ConfigError` naming the flag. Returns config."""
    if config.data.task == "episodes":  # Before the sizes derived from them.
        _check_episode_counts(config.data)
    _check_fields(config)
    _check_model(config.model)
    _check_decoder(config.model)
    _check_train(config.train)
    _check_task(config)
    return config


def _check_fields(config: Config) -> None:
    """The per-field choices and bounds of the schema."""
    for spec in FIELDS.values():
        value = getattr(getattr(config, spec.section), spec.name)
        if spec.choices:
            check_choice(spec.flag, value, spec.choices)
        if spec.minimum is not None:
            check_at_least(spec.flag, value, spec.minimum)
        if spec.positive and not _positive_or_none(value):
            raise ConfigError(f"--{spec.flag}={value} must be a positive finite number")


def _positive_or_none(value: float | None) -> bool:
    return value is None or (value > 0 and math.isfinite(value))


def _check_model(m: ModelConfig) -> None:
    if m.estimator not in VIMCO_ESTIMATORS and m.kind != "vma":
        raise ConfigError(
            f"--estimator={m.estimator} needs a VMA model (an address to "
            f"estimate); kind={m.kind!r} trains with the IWAE gradient"
        )
    if m.straight_through and m.estimator != "gumbel":
        raise ConfigError(
            f"--straight_through applies to --estimator=gumbel; got "
            f"--estimator={m.estimator}"
        )
    if m.encoder_context_init == "zeros" and m.tie_pyramid:
        raise ConfigError(
            "--encoder_context_init=zeros needs --tie_pyramid=false (tied, the "
            "encoder's m-half is also the memory pyramid's first layer)"
        )
    if m.tie_embedders and m.memory == "learned" and m.kind == "vma":
        raise ConfigError(
            "--tie_embedders needs episodic memory (entries shaped like x); "
            "learned memory entries have their own shape"
        )
    units = ",".join(str(u) for u in m.hidden_units)
    if any(u < 1 for u in m.hidden_units):
        raise ConfigError(f"--config.model.hidden_units={units} must be positive sizes")
    if not m.hidden_units and m.architecture != "conv":
        raise ConfigError(
            "--config.model.hidden_units= (no hidden layer) needs "
            "--config.model.architecture='conv'; the MLP models' networks on "
            "[x, m_a] need a hidden layer"
        )
    if m.kind == "vma":
        why = " (VIMCO's leave-one-out baseline needs K >= 2)"
        check_at_least("num_samples", m.num_samples, 2, why)
    else:  # IWAE; K = 1 is the ELBO (the paper's soft-attention baseline).
        check_at_least("num_samples", m.num_samples, 1)
    if m.kind == "soft_attention" and m.architecture != "conv":
        raise ConfigError(
            "--config.model.kind='soft_attention' needs "
            "--config.model.architecture='conv'"
        )


def _check_decoder(m: ModelConfig) -> None:
    if m.decoder_bias_init != "zero" and m.architecture != "mlp":
        raise ConfigError(
            f"--decoder_bias_init={m.decoder_bias_init} applies to MLP decoders "
            "(one bias per pixel); the conv decoder keeps 'zero'"
        )
    if m.architecture == "conv" and m.decoder_context != "all":
        raise ConfigError(
            f"--decoder_context={m.decoder_context} applies to MLP decoders; a conv "
            "decoder takes m_a through its skip paths (--skip_levels)"
        )


def _check_train(t: TrainConfig) -> None:
    if not 0 <= t.seed < 2**31:
        raise ConfigError(f"--seed={t.seed} must be in [0, 2**31 - 1]")
    # The last log interval may be shorter: --steps need not be a multiple.
    for flag in ("eval_every", "checkpoint_every"):
        value = getattr(t, flag)
        if value < 1 or value % t.log_every:
            raise ConfigError(
                f"--{flag}={value} must be a positive multiple of "
                f"--log_every={t.log_every}"
            )
    if not t.lr_drop_step and t.lr_after_drop != FIELDS["train.lr_after_drop"].default:
        raise ConfigError(
            f"--lr_after_drop={t.lr_after_drop} needs --lr_drop_step (the step "
            "it takes effect); without a drop it would do nothing"
        )
    if t.lr_drop_step % t.log_every:
        raise ConfigError(
            f"--lr_drop_step={t.lr_drop_step} must be 0 or a multiple of "
            f"--log_every={t.log_every}"
        )


def _check_task(config: Config) -> None:
    """The dataset, task, architecture and memory fit together."""
    d, m = config.data, config.model
    if not 0 <= d.eval_seed < 2**31:  # As --seed: a TensorFlow int64 seed.
        raise ConfigError(
            f"--config.data.eval_seed={d.eval_seed} must be in [0, 2**31 - 1]"
        )
    if (d.task == "episodes") != (d.dataset in EPISODIC_DATASETS):
        raise ConfigError(
            f"--config.data.dataset={d.dataset!r} does not fit "
            f"--config.data.task={d.task!r}: episodes are for "
            f"{', '.join(EPISODIC_DATASETS)}"
        )
    if (d.dataset == "binarized_mnist") != (m.architecture != "conv"):
        wanted = "mlp" if d.dataset == "binarized_mnist" else "conv"
        raise ConfigError(
            f"--config.data.dataset={d.dataset!r} needs "
            f"--config.model.architecture={wanted!r}"
        )
    if d.task != "episodes":  # Set, they would do nothing.
        for name in _EPISODE_FIELDS:
            if getattr(d, name) != FIELDS[f"data.{name}"].default:
                raise ConfigError(
                    f"--{FIELDS[f'data.{name}'].flag} is for the episodic datasets "
                    f"({', '.join(EPISODIC_DATASETS)}), not {d.dataset!r}"
                )
    if d.task != "recall" and d.eval_memory_size:
        raise ConfigError(
            f"--eval_memory_size={d.eval_memory_size} is for "
            f"--config.data.task=recall, not {d.task!r}"
        )
    if d.task == "recall":
        _check_recall(config)
    elif d.task == "episodes":
        _check_episodes(config)
    else:
        _check_batches(config)


def _check_recall(config: Config) -> None:
    d, m = config.data, config.model
    if d.dataset != "binarized_mnist":
        raise ConfigError(
            f"--config.data.task=recall is for binarized_mnist (its images in "
            f"memory), not {d.dataset!r}"
        )
    sizes = SPLIT_SIZES[d.dataset]
    if m.kind != "vma":  # Its memory and test episodes would be dropped unsaid.
        raise ConfigError(
            f"--config.data.task=recall needs --config.model.kind='vma' (a "
            f"memory to recall from); kind={m.kind!r} has none: its baseline "
            f"is --preset=mnist_vae (--config.data.task='batches')"
        )
    if m.memory != "episodic":
        raise ConfigError(
            "--config.data.task=recall needs episodic memory (images in "
            "memory); got --config.model.memory='learned'"
        )
    if m.memory_size > sizes["train"]:
        raise ConfigError(
            f"--memory_size={m.memory_size} exceeds the "
            f"{sizes['train']} training images of {d.dataset}"
        )
    biggest = min(sizes.values())
    if max(m.memory_size, d.eval_memory_size) > biggest:
        raise ConfigError(
            f"--eval_memory_size/--memory_size="
            f"{max(m.memory_size, d.eval_memory_size)} exceeds the {biggest} "
            f"images of the smallest evaluation split of {d.dataset}"
        )


def _check_episode_counts(d: DataConfig) -> None:
    for flag in ("batch_classes", "targets_per_class", "memory_per_class"):
        check_at_least(flag, getattr(d, flag), 1)
    check_at_least("confounder_classes", d.confounder_classes, 0)
    check_at_least("absent_classes", d.absent_classes, 0)
    if d.absent_classes > d.batch_classes:
        raise ConfigError(
            f"--absent_classes={d.absent_classes} exceeds --batch_classes="
            f"{d.batch_classes}"
        )


def _check_episodes(config: Config) -> None:
    d, m, t = config.data, config.model, config.train
    if d.targets_per_class + d.memory_per_class > DRAWERS_PER_CHARACTER:
        raise ConfigError(
            f"--targets_per_class={d.targets_per_class} + --memory_per_class="
            f"{d.memory_per_class} exceeds the {DRAWERS_PER_CHARACTER} "
            "drawings of each character"
        )
    if d.mixed_memory and d.targets_per_class + d.memory_per_class == (
        DRAWERS_PER_CHARACTER
    ):  # Each character has no drawing to spare: the split is always even.
        raise ConfigError(
            f"--mixed_memory has nothing to mix: --memory_per_class="
            f"{d.memory_per_class} is every drawing a character has left after "
            f"--targets_per_class={d.targets_per_class}; lower --memory_per_class"
        )
    if d.mixed_memory and d.memory_per_class == 1:  # One row each, at least one each.
        raise ConfigError(
            "--mixed_memory has nothing to mix: with --memory_per_class=1 every "
            "character keeps its one row; give --memory_per_class >= 2"
        )
    if d.mixed_memory and d.batch_classes + d.confounder_classes == 1:
        raise ConfigError(
            "--mixed_memory has nothing to mix: memory holds one character "
            f"(--batch_classes={d.batch_classes} + --confounder_classes="
            f"{d.confounder_classes}); give two or more"
        )
    chars = min(SPLIT_SIZES[d.dataset].values())
    if d.batch_classes + d.confounder_classes + d.absent_classes > chars:
        absent = f" + --absent_classes={d.absent_classes}" if d.absent_classes else ""
        raise ConfigError(
            f"--batch_classes={d.batch_classes} + --confounder_classes="
            f"{d.confounder_classes}{absent} exceeds the {chars} characters of the "
            f"smallest split of {d.dataset}"
        )
    if (t.batch_size, m.memory_size) != episode_sizes(d):
        raise ConfigError(
            f"--batch_size={t.batch_size}/--memory_size={m.memory_size} do not "
            f"match the episode {episode_sizes(d)}"
        )
    if m.kind != "vae" and m.memory != "episodic":
        raise ConfigError(
            "--config.data.task=episodes needs episodic memory "
            "(--config.model.memory='episodic')"
        )


def _check_batches(config: Config) -> None:
    d, m, t = config.data, config.model, config.train
    if m.kind != "vae" and m.memory != "learned":
        raise ConfigError(
            f"--config.data.task=batches with --config.model.kind={m.kind!r} "
            "needs learned memory (nothing would fill an episodic memory)"
        )
    smallest = min(SPLIT_SIZES[d.dataset].values())
    if t.batch_size > smallest:
        raise ConfigError(
            f"--batch_size={t.batch_size} exceeds the smallest "
            f"split of {d.dataset} ({smallest})"
        )
