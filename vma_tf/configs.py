"""Experiment configuration: frozen dataclasses and the paper's presets.

A `Config` is fully resolved (no defaults hidden elsewhere); `train_and_evaluate`
writes it to `WORKDIR/config.json`, and `Config.from_dict` reads it back.
Launchers override fields with `override(config, **flat_values)` using the flat
flag names in `FLAG_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

# The address gradient estimators (`vma_tf.estimators.ESTIMATORS`; repeated
# here because this module must not import TensorFlow).
ESTIMATORS = ("vimco", "vimco_geometric", "nvil", "rws", "gumbel")


class ConfigError(ValueError):
    """An invalid configuration value. The message is one line naming the flag."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where examples and memory contents come from.

    Attributes:
        dataset: `"binarized_mnist"` (Larochelle's fixed binarisation);
            `"omniglot_fewshot"` (26x26, the 45/5 alphabet split);
            `"omniglot_gmn"` (28x28, the GMN background/evaluation split);
            `"omniglot_learned"` (28x28, all characters, drawers 15/5).
        task: `"recall"`: each step fills memory with `memory_size` random training
            images and draws the targets from that memory (paper Fig. 2A);
            `"batches"`: ordinary shuffled minibatches of the training set (learned
            memory or no memory); `"episodes"`: few-shot episodes (Omniglot).
        batch_classes: characters per episode (targets come from these).
        targets_per_class: targets per character; batch = classes * targets.
        memory_per_class: other examples of each character put in memory.
        confounder_classes: extra characters with examples only in memory.
        eval_memory_size: extra test-time memory size evaluated for `recall`
            (the paper's 2048-test-image memory); 0 disables it.
        eval_batches: number of batches per evaluation (0 = the whole split,
            remainder dropped so XLA sees one static shape).
        data_dir: explicit data directory (else `$VMA_DATA_DIR`, then `./data`).
    """

    dataset: str = "binarized_mnist"
    task: str = "batches"
    eval_memory_size: int = 0
    eval_batches: int = 0
    data_dir: str | None = None
    batch_classes: int = 8
    targets_per_class: int = 4
    memory_per_class: int = 4
    confounder_classes: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The generative model.

    Attributes:
        kind: `"vma"` (variational memory addressing), `"vae"` (no memory) or
            `"soft_attention"` (z top-level, soft memory read-out).
        architecture: `"mlp"` (MNIST, section 4.1) or `"conv"` (Omniglot,
            section 4.2).
        channels: feature maps of every conv layer (conv only).
        weight_decay: L2 penalty on all parameters except learned memory.
        memory: `"episodic"` (contents given per batch) or `"learned"` (trainable
            `[memory_size, memory_dim]` parameter). Ignored for `vae`.
        memory_size: |M|, the number of memory slots.
        memory_dim: size of one learned memory entry (episodic entries have the
            shape of an image).
        hidden_units: hidden layer sizes of every MLP (paper: 256, 128).
        latent_dim: |z| (paper: 32 on MNIST).
        embed_dim: size of the matching space for q(a|x) and p(a) (128).
        similarity: `"normalized"` (paper eq. 5), `"dot"` or `"cosine"`.
        prior: `"learned"` (query e^p) or `"flat"` (p(a) = 1/|M|).
        num_samples: K, samples from q per example for the bound and VIMCO.
        baseline: VIMCO leave-one-out baseline, `"arithmetic"` (paper) or
            `"geometric"` (Mnih & Rezende 2016). Kept for old configs and
            `--baseline`: `"geometric"` with `estimator="vimco"` means
            `estimator="vimco_geometric"` (normalised on construction).
        estimator: training gradient estimator for the address (issue 7):
            `"vimco"` (paper), `"vimco_geometric"`, `"nvil"`, `"rws"`
            (reweighted wake-sleep) or `"gumbel"` (relaxed address in
            training; the exact discrete model in evaluation). See
            `vma_tf.estimators`. Only VMA models have an address.
        gumbel_temperature: temperature of the Gumbel-softmax address.
        straight_through: `"gumbel"` with the hard one-hot address forward
            and the relaxed gradient backward.
        decoder_context: where p(x|z, m_a) sees m_a: `"first"` layer only
            (an MLP on [z, m_a]) or `"all"` layers (skip paths from m_a).
            MLP only (conv decoders: `skip_levels`).
        skip_mode: how the conv decoder joins the skip paths from m_a's
            pyramid: `"concat"` or `"add"` (conv only).
        skip_levels: how many resolutions of the conv decoder, coarsest
            first, receive a skip path from m_a's pyramid (4 = all: 4, 7, 13
            and the full 26 or 28; 0 = none, m_a only through its top vector).
        tie_pyramid: also share the conv downscaling layers of q(z|x, m_a)
            with the pyramid of m_a (conv only). p(z|m_a) and p(x|z, m_a)
            always share that pyramid: we read the paper's "we tie ... the
            downscaling layers in q(z|m) and p(x|m, z)" as p(z|m), the only
            other network of m alone. Tying q too measured 5.4 nats worse at
            3000 steps (RESULTS.md), so the default is False.
        decoder_refine: extra 3x3 ReLU conv layers of the conv decoder at full
            resolution, after the last skip path and before the logits (conv
            only). With 0 the logits are a linear function of m_a's finest
            pyramid features plus the upscaled z path; >= 1 lets the decoder
            gate the template by z. The Omniglot presets use 2. Measured on
            `omniglot_fewshot --channels=32`, seed 0, 5000 steps, test
            nll_bound VMA / VAE (same decoder): 0: 103.31 / 107.48; 1: 101.29
            (98.99 under XLA) / 106.25; 2: 98.33 / 107.69 (RESULTS.md).
        fast_convs: compute stride-2 convolutions and transposed convolutions
            as dense stride-1 convolutions on space-to-depth / depth-to-space
            rearrangements (conv only; `modeling.conv`): the same function
            and variables. Under XLA on the 2-core CPU the 13 -> 26 upconv is
            1.7x faster this way but the stride-2 convs are slower, and the
            whole Omniglot step measured the same within noise (BENCHMARKS.md),
            so the default is False (Keras' layers).
        tie_embedders: one embedding network for memory entries and queries
            (h = h^q). Needs entries shaped like x (episodic memory).
        memory_init_scale: stddev of the N(0, s^2) initialisation of learned
            memory entries; None: the architecture's own (MLP 1.0, conv 0.5).
        decoder_bias_init: initial output bias of the MLP decoder (conv
            models refuse anything but `"zero"`): `"zero"`
            or `"data_mean"` (the logits of the training-set pixel means, so
            the untrained decoder already predicts the data's marginal).
        prior_z_init: initialisation of p(z|m_a)'s output layer (MLP and
            conv): `"glorot"` (Keras' default) or `"standard_normal"` (zero kernel:
            p(z|m_a) = N(0, I) for every entry at initialisation, so no entry
            starts out favoured for every target by its prior alone).
        encoder_context_init: initialisation of the m_a-half of q(z|x, m_a)'s
            first layer (MLP: `ConditionalMLP.context_proj`; conv: the m-half
            of the untied encoder pyramid's first conv): `"glorot"` (Keras'
            default) or `"zeros"` (q(z|x, m_a) starts as the VAE's q(z|x) and
            learns how to use m_a; zero-init as in residual branches). With
            learned N(0, 1) entries in R^256 the Glorot m-half has ~5x the
            variance of the image half at initialisation, so the untrained
            encoder's features are mostly the (resampled) entry.
    """

    kind: str = "vma"
    architecture: str = "mlp"
    channels: int = 64
    weight_decay: float = 0.0
    memory: str = "episodic"
    memory_size: int = 256
    memory_dim: int = 256
    hidden_units: tuple[int, ...] = (256, 128)
    latent_dim: int = 32
    embed_dim: int = 128
    similarity: str = "normalized"
    prior: str = "learned"
    num_samples: int = 4
    baseline: str = "arithmetic"
    estimator: str = "vimco"
    gumbel_temperature: float = 0.5
    straight_through: bool = False
    decoder_context: str = "all"
    skip_mode: str = "concat"
    skip_levels: int = 4
    tie_pyramid: bool = False
    fast_convs: bool = False
    decoder_refine: int = 0
    tie_embedders: bool = False
    memory_init_scale: float | None = None
    decoder_bias_init: str = "zero"
    prior_z_init: str = "glorot"
    encoder_context_init: str = "glorot"

    def __post_init__(self):
        # One name per estimator: vimco + geometric baseline is
        # vimco_geometric, and vimco_geometric always has the geometric one.
        if self.estimator == "vimco" and self.baseline == "geometric":
            object.__setattr__(self, "estimator", "vimco_geometric")
        elif self.estimator == "vimco_geometric":
            object.__setattr__(self, "baseline", "geometric")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
        steps: total optimiser steps (the run resumes until it reaches this).
        batch_size: B, targets per step.
        learning_rate: Adam learning rate (paper: best of 1e-4, 3e-4).
        seed: seeds parameters, data order and every sample.
        log_every: steps between train-metric lines; `eval_every`,
            `checkpoint_every` and `steps` must be multiples of it.
        eval_every: steps between evaluations on the validation split.
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: how many checkpoints to keep.
        jit: compile train/test steps with XLA (`jit_compile=True`).
        init_from: warm start: a run directory whose newest checkpoint gives
            the initial model weights (every model variable must match; the
            optimizer and the step count start fresh). Used only when this
            run has no checkpoint of its own. E.g. a memory-size curriculum:
            `mnist_recall` with |M| = 16, then |M| = 256 from it.
        strategy: `tf.distribute` strategy: `"default"` (one device),
            `"mirrored"` (all local GPUs, `MirroredStrategy`) or
            `"multi_worker"` (`MultiWorkerMirroredStrategy` from `$TF_CONFIG`).
            `batch_size` stays the global batch (split across replicas).
        deterministic: call `tf.config.experimental.enable_op_determinism()`
            before any op, so every kernel (also on GPU) is deterministic. The
            data position needs no extra state: batch `s` is a pure function
            of (seed, s) and the step is the checkpointed optimizer counter,
            so a run killed at any step (even SIGKILL) and rerun ends
            bit-equal to an uninterrupted one. On CPU the kernels we use are
            deterministic anyway (`tests/test_reliability.py`); the flag costs
            speed on GPU.
        skip_nonfinite: a step whose loss or gradient is NaN/Inf changes no
            weight and no optimizer moment (the step counter still advances,
            so the data position stays exact); skipped steps are counted in
            the `skipped_steps` metric. Off (default): training stops with
            the step named and the last good checkpoint kept.
    """

    steps: int = 100_000
    batch_size: int = 32
    learning_rate: float = 3e-4
    seed: int = 0
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    jit: bool = True
    init_from: str | None = None
    strategy: str = "default"
    deterministic: bool = False
    skip_nonfinite: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        try:
            model = dict(d["model"])
            model["hidden_units"] = tuple(model["hidden_units"])
            return cls(
                name=d["name"],
                data=DataConfig(**d["data"]),
                model=ModelConfig(**model),
                train=TrainConfig(**d["train"]),
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a vma_tf config: {e}") from None


# Flat flag name -> (section, field). The launcher exposes these as flags.
FLAG_FIELDS = {
    "steps": ("train", "steps"),
    "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"),
    "seed": ("train", "seed"),
    "log_every": ("train", "log_every"),
    "eval_every": ("train", "eval_every"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "jit": ("train", "jit"),
    "init_from": ("train", "init_from"),
    "strategy": ("train", "strategy"),
    "deterministic": ("train", "deterministic"),
    "skip_nonfinite": ("train", "skip_nonfinite"),
    "num_samples": ("model", "num_samples"),
    "memory_size": ("model", "memory_size"),
    "similarity": ("model", "similarity"),
    "prior": ("model", "prior"),
    "baseline": ("model", "baseline"),
    "estimator": ("model", "estimator"),
    "gumbel_temperature": ("model", "gumbel_temperature"),
    "straight_through": ("model", "straight_through"),
    "decoder_context": ("model", "decoder_context"),
    "skip_mode": ("model", "skip_mode"),
    "skip_levels": ("model", "skip_levels"),
    "tie_pyramid": ("model", "tie_pyramid"),
    "decoder_refine": ("model", "decoder_refine"),
    "tie_embedders": ("model", "tie_embedders"),
    "memory_init_scale": ("model", "memory_init_scale"),
    "decoder_bias_init": ("model", "decoder_bias_init"),
    "prior_z_init": ("model", "prior_z_init"),
    "encoder_context_init": ("model", "encoder_context_init"),
    "channels": ("model", "channels"),
    "weight_decay": ("model", "weight_decay"),
    "batch_classes": ("data", "batch_classes"),
    "targets_per_class": ("data", "targets_per_class"),
    "memory_per_class": ("data", "memory_per_class"),
    "confounder_classes": ("data", "confounder_classes"),
    "data_dir": ("data", "data_dir"),
    "eval_memory_size": ("data", "eval_memory_size"),
    "eval_batches": ("data", "eval_batches"),
}

# Fields that may change when a run is resumed (they do not change the model).
RESUMABLE_FIELDS = {
    ("train", f)
    for f in (
        "steps",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "jit",
        "init_from",
        "strategy",
        "deterministic",
        "skip_nonfinite",
    )
} | {
    ("data", "data_dir"),
    ("data", "eval_batches"),
    ("data", "eval_memory_size"),
    ("model", "fast_convs"),  # Same variables and function either way.
}


def override(config: Config, **values: Any) -> Config:
    """Returns `config` with flat flag values (see `FLAG_FIELDS`) replaced.

    `None` values are ignored, so unset flags keep the preset's value.
    """
    sections = {"data": {}, "model": {}, "train": {}}
    for key, value in values.items():
        if value is None:
            continue
        if key not in FLAG_FIELDS:
            raise ConfigError(
                f"unknown config field {key!r}; known: {', '.join(sorted(FLAG_FIELDS))}"
            )
        section, field = FLAG_FIELDS[key]
        sections[section][field] = value
    model = sections["model"]
    if "estimator" in model and "baseline" not in model:
        # An explicit estimator replaces a geometric baseline of the base
        # config (which would otherwise turn "vimco" into "vimco_geometric").
        if model["estimator"] != "vimco_geometric":
            model["baseline"] = "arithmetic"
    elif model.get("baseline") == "geometric" and model.get("estimator") not in (
        None,
        "vimco",
        "vimco_geometric",
    ):
        raise ConfigError(
            f"--baseline=geometric is VIMCO's leave-one-out baseline; it does not "
            f"apply to --estimator={model['estimator']} (use "
            "--estimator=vimco_geometric)"
        )
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, **sections["data"]),
        model=dataclasses.replace(config.model, **sections["model"]),
        train=dataclasses.replace(config.train, **sections["train"]),
    )
    if config.data.task == "episodes":
        derived = episode_sizes(config.data)
        for key, value in zip(("batch_size", "memory_size"), derived):
            if values.get(key) is not None and values[key] != value:
                raise ConfigError(
                    f"--{key}={values[key]} conflicts with the episode: it is "
                    f"derived as {value} from --batch_classes, "
                    "--targets_per_class, --memory_per_class and "
                    "--confounder_classes"
                )
        config = dataclasses.replace(
            config,
            train=dataclasses.replace(config.train, batch_size=derived[0]),
            model=dataclasses.replace(config.model, memory_size=derived[1]),
        )
    return config


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


def x_shape(config: Config) -> tuple[int, ...]:
    """Shape of one example of `config`'s dataset."""
    dataset = config.data.dataset
    if dataset == "binarized_mnist":
        return (784,)
    if dataset == "omniglot_fewshot":
        return (26, 26, 1)
    return (28, 28, 1)


def episode_sizes(data: DataConfig) -> tuple[int, int]:
    """`(batch_size, memory_size)` of a few-shot episode."""
    return (
        data.batch_classes * data.targets_per_class,
        (data.batch_classes + data.confounder_classes) * data.memory_per_class,
    )


def _choice(flag: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"--{flag}={value!r} is not allowed; choose one of "
            f"{', '.join(map(str, allowed))}"
        )


def _at_least(flag: str, value: float, minimum: float, why: str = "") -> None:
    if value < minimum:
        raise ConfigError(f"--{flag}={value} must be >= {minimum}{why}")


# Sizes of the splits the tasks draw from, for early, one-line errors:
# images for MNIST and the learned-memory Omniglot split, characters for the
# episodic Omniglot splits (20 drawers each).
SPLIT_SIZES = {
    "binarized_mnist": {"train": 50_000, "valid": 10_000, "test": 10_000},
    "omniglot_fewshot": {"train": 1479, "test": 144},
    "omniglot_gmn": {"train": 964, "test": 659},
    "omniglot_learned": {"train": 1623 * 15, "test": 1623 * 5},
}
DRAWERS_PER_CHARACTER = 20
EPISODIC_DATASETS = ("omniglot_fewshot", "omniglot_gmn")


def validate(config: Config) -> Config:
    """Checks every value; raises `ConfigError` naming the flag. Returns config."""
    d, m, t = config.data, config.model, config.train
    _choice("dataset", d.dataset, tuple(SPLIT_SIZES))
    _choice("task", d.task, ("recall", "batches", "episodes"))
    _choice("kind", m.kind, ("vma", "vae", "soft_attention"))
    _choice("architecture", m.architecture, ("mlp", "conv"))
    _at_least("channels", m.channels, 1)
    _at_least("weight_decay", m.weight_decay, 0.0)
    _choice("memory", m.memory, ("episodic", "learned"))
    _choice("similarity", m.similarity, ("normalized", "dot", "cosine"))
    _choice("prior", m.prior, ("learned", "flat"))
    _choice("baseline", m.baseline, ("arithmetic", "geometric"))
    _choice("estimator", m.estimator, ESTIMATORS)
    if not (m.gumbel_temperature > 0 and math.isfinite(m.gumbel_temperature)):
        raise ConfigError(
            f"--gumbel_temperature={m.gumbel_temperature} must be a positive "
            "finite number"
        )
    if m.baseline == "geometric" and m.estimator != "vimco_geometric":
        raise ConfigError(
            f"--baseline=geometric is VIMCO's leave-one-out baseline; it does not "
            f"apply to --estimator={m.estimator} (use --estimator=vimco_geometric)"
        )
    if m.estimator not in ("vimco", "vimco_geometric") and m.kind != "vma":
        raise ConfigError(
            f"--estimator={m.estimator} needs a VMA model (an address to "
            f"estimate); kind={m.kind!r} trains with the IWAE gradient"
        )
    if m.straight_through and m.estimator != "gumbel":
        raise ConfigError(
            f"--straight_through applies to --estimator=gumbel; got "
            f"--estimator={m.estimator}"
        )
    _choice("decoder_context", m.decoder_context, ("first", "all"))
    if m.architecture == "conv" and m.decoder_context != "all":
        raise ConfigError(
            f"--decoder_context={m.decoder_context} applies to MLP decoders; a conv "
            "decoder takes m_a through its skip paths (--skip_levels)"
        )
    _choice("skip_mode", m.skip_mode, ("concat", "add"))
    _choice("skip_levels", m.skip_levels, (0, 1, 2, 3, 4))
    _at_least("decoder_refine", m.decoder_refine, 0)
    _choice("decoder_bias_init", m.decoder_bias_init, ("zero", "data_mean"))
    _choice("prior_z_init", m.prior_z_init, ("glorot", "standard_normal"))
    _choice("encoder_context_init", m.encoder_context_init, ("glorot", "zeros"))
    if m.encoder_context_init == "zeros" and m.tie_pyramid:
        raise ConfigError(
            "--encoder_context_init=zeros needs --tie_pyramid=false (tied, the "
            "encoder's m-half is also the memory pyramid's first layer)"
        )
    if m.decoder_bias_init != "zero" and m.architecture != "mlp":
        raise ConfigError(
            f"--decoder_bias_init={m.decoder_bias_init} applies to MLP decoders "
            "(one bias per pixel); the conv decoder keeps 'zero'"
        )
    if m.memory_init_scale is not None and not (
        m.memory_init_scale > 0 and math.isfinite(m.memory_init_scale)
    ):
        raise ConfigError(
            f"--memory_init_scale={m.memory_init_scale} must be a positive "
            "finite number"
        )
    if m.tie_embedders and m.memory == "learned" and m.kind == "vma":
        raise ConfigError(
            "--tie_embedders needs episodic memory (entries shaped like x); "
            "learned memory entries have their own shape"
        )
    _choice("strategy", t.strategy, ("default", "mirrored", "multi_worker"))
    if d.task == "episodes":  # Before the sizes derived from them.
        for flag in ("batch_classes", "targets_per_class", "memory_per_class"):
            _at_least(flag, getattr(d, flag), 1)
        _at_least("confounder_classes", d.confounder_classes, 0)
    if m.kind == "vma":
        _at_least(
            "num_samples",
            m.num_samples,
            2,
            " (VIMCO's leave-one-out baseline needs K >= 2)",
        )
    else:  # IWAE; K = 1 is the ELBO (the paper's soft-attention baseline).
        _at_least("num_samples", m.num_samples, 1)
    _at_least("memory_size", m.memory_size, 1)
    _at_least("latent_dim", m.latent_dim, 1)
    _at_least("embed_dim", m.embed_dim, 1)
    if not 0 <= t.seed < 2**31:
        raise ConfigError(f"--seed={t.seed} must be in [0, 2**31 - 1]")
    _at_least("steps", t.steps, 1)
    _at_least("batch_size", t.batch_size, 1)
    _at_least("log_every", t.log_every, 1)
    _at_least("eval_batches", d.eval_batches, 0)
    _at_least("eval_memory_size", d.eval_memory_size, 0)
    if not (t.learning_rate > 0 and math.isfinite(t.learning_rate)):
        raise ConfigError(
            f"--learning_rate={t.learning_rate} must be a positive finite number"
        )
    for flag in ("steps", "eval_every", "checkpoint_every"):
        value = getattr(t, flag)
        if value < 1 or value % t.log_every:
            raise ConfigError(
                f"--{flag}={value} must be a positive multiple of "
                f"--log_every={t.log_every}"
            )
    sizes = SPLIT_SIZES[d.dataset]
    if m.kind == "vma" and d.task == "recall":
        if m.memory != "episodic":
            raise ConfigError(
                "--task=recall needs episodic memory (images in "
                "memory); got memory='learned'"
            )
        biggest = min(sizes.values())
        if m.memory_size > sizes["train"]:
            raise ConfigError(
                f"--memory_size={m.memory_size} exceeds the "
                f"{sizes['train']} training images of {d.dataset}"
            )
        if max(m.memory_size, d.eval_memory_size) > biggest:
            raise ConfigError(
                f"--eval_memory_size/--memory_size="
                f"{max(m.memory_size, d.eval_memory_size)} exceeds the {biggest} "
                f"images of the smallest evaluation split of {d.dataset}"
            )
    if (d.task == "episodes") != (d.dataset in EPISODIC_DATASETS):
        raise ConfigError(
            f"dataset {d.dataset!r} does not fit task {d.task!r}: "
            f"episodes are for {', '.join(EPISODIC_DATASETS)}"
        )
    if d.dataset != "binarized_mnist" and m.architecture != "conv":
        raise ConfigError(f"dataset {d.dataset!r} needs architecture='conv'")
    if m.kind == "soft_attention" and m.architecture != "conv":
        raise ConfigError("kind='soft_attention' needs architecture='conv'")
    if d.task == "episodes":
        if d.targets_per_class + d.memory_per_class > DRAWERS_PER_CHARACTER:
            raise ConfigError(
                f"--targets_per_class={d.targets_per_class} + --memory_per_class="
                f"{d.memory_per_class} exceeds the {DRAWERS_PER_CHARACTER} "
                "drawings of each character"
            )
        chars = min(sizes.values())
        if d.batch_classes + d.confounder_classes > chars:
            raise ConfigError(
                f"--batch_classes={d.batch_classes} + --confounder_classes="
                f"{d.confounder_classes} exceeds the {chars} characters of the "
                f"smallest split of {d.dataset}"
            )
        if (t.batch_size, m.memory_size) != episode_sizes(d):
            raise ConfigError(
                f"batch_size={t.batch_size}/memory_size={m.memory_size} do not "
                f"match the episode {episode_sizes(d)}"
            )
        if m.kind != "vae" and m.memory != "episodic":
            raise ConfigError("--task=episodes needs episodic memory")
    if d.task == "batches":
        if m.kind == "vma" and m.memory != "learned":
            raise ConfigError(
                "--task=batches with kind='vma' needs learned memory "
                "(nothing would fill an episodic memory)"
            )
        if t.batch_size > min(sizes.values()):
            raise ConfigError(
                f"--batch_size={t.batch_size} exceeds the smallest "
                f"split of {d.dataset} ({min(sizes.values())})"
            )
    return config


def _mnist(name: str, data: DataConfig, model: ModelConfig) -> Config:
    return Config(name=name, data=data, model=model, train=TrainConfig())


PRESETS: dict[str, Config] = {
    # Fig. 2A: memory of |M| training images, targets drawn from it.
    # Tied embedders (h = h^q): with eq. 5 an exact copy of x in memory then
    # always has the highest score (README "Deviations from the paper").
    "mnist_recall": _mnist(
        "mnist_recall",
        DataConfig(task="recall", eval_memory_size=2048, eval_batches=20),
        ModelConfig(kind="vma", memory="episodic", memory_size=256, tie_embedders=True),
    ),
    # Section 4.1 "learned memory": |M| in {64, ..., 1024}, m_a in R^256.
    "mnist_learned": _mnist(
        "mnist_learned",
        DataConfig(task="batches"),
        # m_a enters the decoder's first layer only (an MLP on [z, m_a]), the
        # decoder starts at the data mean and p(z|m_a) at N(0, I): measured
        # to keep the address from collapsing onto one slot; q(z|x, m_a)
        # starts as q(z|x) (zero m_a-half), measured to let z learn as fast
        # as in the VAE (README "Deviations from the paper").
        ModelConfig(
            kind="vma",
            memory="learned",
            memory_size=256,
            memory_dim=256,
            decoder_context="first",
            decoder_bias_init="data_mean",
            prior_z_init="standard_normal",
            encoder_context_init="zeros",
        ),
    ),
    # Baseline: the same encoder/decoder, no memory.
    "mnist_vae": _mnist(
        "mnist_vae",
        DataConfig(task="batches"),
        ModelConfig(kind="vae", decoder_bias_init="data_mean"),
    ),
}


def _omniglot(
    name: str,
    dataset: str,
    kind: str = "vma",
    memory: str = "episodic",
    memory_size: int | None = None,
    channels: int = 64,
    weight_decay: float = 0.0,
    hidden_units=(256,),
) -> Config:
    task = "episodes" if dataset in EPISODIC_DATASETS else "batches"
    data = DataConfig(dataset=dataset, task=task, eval_batches=20)
    model = ModelConfig(
        kind=kind,
        architecture="conv",
        channels=channels,
        weight_decay=weight_decay,
        memory=memory,
        memory_size=memory_size or 0,
        hidden_units=hidden_units,
        latent_dim=64,
        embed_dim=128,
        decoder_refine=2,
    )
    # TF's own (oneDNN) conv kernels: 1.5x faster than XLA's on CPU for
    # these nets (BENCHMARKS.md); pass --jit to compile with XLA (e.g. GPU).
    train = TrainConfig(jit=False)
    config = Config(name=name, data=data, model=model, train=train)
    return override(config)  # Derives batch and memory size of episodes.


PRESETS.update(
    {
        # Section 4.2 few-shot: 8 characters x 4 targets, 4 more of each in memory.
        "omniglot_fewshot": _omniglot("omniglot_fewshot", "omniglot_fewshot"),
        "omniglot_fewshot_vae": _omniglot(
            "omniglot_fewshot_vae", "omniglot_fewshot", kind="vae"
        ),
        "omniglot_fewshot_soft": _omniglot(
            "omniglot_fewshot_soft", "omniglot_fewshot", kind="soft_attention"
        ),
        # Learned memory: |M| = 256 entries of 28x28, 32 maps, L2 3e-4 except M.
        "omniglot_learned": _omniglot(
            "omniglot_learned",
            "omniglot_learned",
            memory="learned",
            memory_size=256,
            channels=32,
            weight_decay=3e-4,
        ),
        # GMN split (Table 1): smaller channels and MLPs, L2 3e-4.
        "omniglot_gmn": _omniglot(
            "omniglot_gmn",
            "omniglot_gmn",
            channels=32,
            weight_decay=3e-4,
            hidden_units=(128,),
        ),
    }
)

DEFAULT_PRESET = "mnist_recall"


def get_preset(name: str) -> Config:
    """Returns the named preset. Raises `ConfigError` for unknown names."""
    if name not in PRESETS:
        raise ConfigError(
            f"--preset={name!r} is unknown; choose one of {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name]
