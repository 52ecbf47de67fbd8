"""The config schema: frozen dataclasses whose fields carry their help text,
choices and bounds, and every choice list (each defined once, here).

Each field's `metadata` holds (`fields.FIELDS` reads it into `FieldSpec`s):
    help: one or two sentences (the flag's help text).
    choices: allowed values (checked by `validate`; enum flags refuse others).
    short: the launchers expose the field as a flat `--NAME` flag (every
        field is also `--config.SECTION.NAME`, see `launchers.common`).
    minimum / positive: bounds checked by `validate` for every config.
    resumable: may change when a run is resumed (does not change the model).

No TensorFlow or absl import: launchers build and validate configs first.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value. The message is one line naming the flag."""


# -- Choice lists ----------------------------------------------------------
DATASETS = (
    "binarized_mnist",
    "omniglot_fewshot",
    "omniglot_gmn",
    "omniglot_bgeval",
    "omniglot_learned",
)
EPISODIC_DATASETS = ("omniglot_fewshot", "omniglot_gmn", "omniglot_bgeval")
TASKS = ("recall", "batches", "episodes")
EVAL_SUBSETS = ("spread", "first")
KINDS = ("vma", "vae", "soft_attention")
ARCHITECTURES = ("mlp", "conv")
MEMORIES = ("episodic", "learned")
SIMILARITIES = ("normalized", "dot", "cosine")
PRIORS = ("learned", "flat")
# The address gradient estimators (`vma_tf.estimators` implements them).
ESTIMATORS = ("vimco", "vimco_geometric", "nvil", "rws", "gumbel")
VIMCO_ESTIMATORS = ("vimco", "vimco_geometric")
# VIMCO's leave-one-out baselines: only the legacy `--baseline` flag and old
# config.json files name them (`"geometric"` with vimco is vimco_geometric).
BASELINES = ("arithmetic", "geometric")
DECODER_CONTEXTS = ("first", "all")
SKIP_MODES = ("concat", "add")
SKIP_LEVELS = (0, 1, 2, 3, 4)
DECODER_BIAS_INITS = ("zero", "data_mean")
PRIOR_Z_INITS = ("glorot", "standard_normal")
ENCODER_CONTEXT_INITS = ("glorot", "zeros")
STRATEGIES = ("default", "mirrored", "multi_worker")
# Not a config field: the keras-tuner oracles of `launchers.tune` (`vma_tf.tuning`).
TUNERS = ("random", "bayesian", "hyperband")
# Keras dtype policies: training (`TrainConfig.precision`), evaluation and benchmarks.
PRECISIONS = ("float32", "mixed_bfloat16")


def _field(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] = (),
    short: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    resumable: bool = False,
) -> Any:
    metadata = {
        "help": help,
        "choices": choices,
        "short": short,
        "minimum": minimum,
        "positive": positive,
        "resumable": resumable,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where examples and memory contents come from (help: field metadata)."""

    dataset: str = _field(
        "binarized_mnist",
        "binarized_mnist (Larochelle's fixed binarisation); omniglot_fewshot "
        "(26x26, the 45/5 alphabet split); omniglot_gmn (28x28, the GMN "
        "background/evaluation split); omniglot_bgeval (26x26 nearest-"
        "neighbour, the same split, as the public PyTorch VMA's); "
        "omniglot_learned (28x28, all "
        "characters, drawers 15/5).",
        choices=DATASETS,
    )
    task: str = _field(
        "batches",
        "recall: each step fills memory with memory_size random training images "
        "and draws the targets from it (paper Fig. 2A); batches: shuffled "
        "minibatches (learned or no memory); episodes: few-shot episodes.",
        choices=TASKS,
    )
    eval_memory_size: int = _field(
        0,
        "Extra test-time memory size for recall (the paper's 2048 test images; "
        "0: none).",
        short=True,
        minimum=0,
        resumable=True,
    )
    eval_batches: int = _field(
        0,
        "Batches per evaluation (0: every full batch of the split, the "
        "remainder dropped so XLA sees one static shape; recall batches and "
        "few-shot episodes are drawn, not read, and 0 draws 20). A fixed "
        "split's final evaluation reads all of it.",
        short=True,
        minimum=0,
        resumable=True,
    )
    eval_subset: str = _field(
        "spread",
        "Which examples an evaluation of fewer batches than its split holds "
        "(--eval_batches) reads from a fixed split: spread, a random subset "
        "drawn with eval_seed; first, the first ones in file order (biased "
        "where the file is sorted: binarized MNIST's test digits, Omniglot's "
        "characters; a config.json written before this field, 2026-12-06, "
        "reads as first, the set it was evaluated on).",
        choices=EVAL_SUBSETS,
    )
    eval_seed: int = _field(
        0,
        "Seed of the evaluation sets drawn at random (the Omniglot test "
        "episodes, recall's test memories): the same for every --seed, so runs "
        "of different seeds are evaluated on the same targets. A config.json "
        "written before this field (2026-12-06) reads as its train.seed, the "
        "sets it was evaluated on.",
        minimum=0,
    )
    data_dir: str | None = _field(
        None,
        "Data directory (else $VMA_DATA_DIR, then ./data).",
        short=True,
        resumable=True,
    )
    # The episode sizes; batch = classes * targets (episodes only).
    batch_classes: int = _field(8, "Characters per few-shot episode.", short=True)
    targets_per_class: int = _field(4, "Targets per character.", short=True)
    memory_per_class: int = _field(
        4, "Other examples of each character in memory.", short=True
    )
    confounder_classes: int = _field(
        0,
        "Training episodes: extra characters with drawings only in memory (the "
        "test episodes have none: their memory is --batch_classes x "
        "--memory_per_class).",
        short=True,
    )
    absent_classes: int = _field(
        0,
        "Training episodes: of the --batch_classes target characters, this many "
        "have no drawing in memory (other characters fill their memory rows), "
        "so the model also learns to generate a character it has not seen, as "
        "Table 1's sequences ask (0: the paper's episodes).",
        short=True,
    )
    rotated_classes: bool = _field(
        False,
        "Training episodes: also draw each training character rotated by 90, "
        "180 and 270 degrees, as three more characters of three more "
        "alphabets (class augmentation; false: the paper's episodes). "
        "Evaluation always uses the characters as drawn.",
        short=True,
    )
    mixed_memory: bool = _field(
        False,
        "Training episodes: keep the memory's (batch_classes + "
        "confounder_classes) * memory_per_class rows but split them among the "
        "episode's characters at random (at least one each, at most the "
        "drawings a character has left; uniformly among such splits), so a target's "
        "character has from one drawing in memory to many, as in Table 1's "
        "sequences (false: the paper's episodes, memory_per_class each). "
        "Evaluation episodes are never mixed.",
        short=True,
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The generative model (help: field metadata)."""

    kind: str = _field(
        "vma",
        "vma (variational memory addressing), vae (no memory) or soft_attention "
        "(z top-level, soft memory read-out).",
        choices=KINDS,
    )
    architecture: str = _field(
        "mlp",
        "mlp (MNIST, section 4.1) or conv (Omniglot, section 4.2).",
        choices=ARCHITECTURES,
    )
    channels: int = _field(
        64, "Feature maps of every conv layer (conv only).", short=True, minimum=1
    )
    weight_decay: float = _field(
        0.0,
        "L2 penalty on all parameters except learned memory.",
        short=True,
        minimum=0.0,
    )
    memory: str = _field(
        "episodic",
        "episodic (contents given per batch) or learned (a trainable "
        "[memory_size, memory_dim] parameter). Ignored for vae.",
        choices=MEMORIES,
    )
    memory_size: int = _field(256, "Memory slots |M|.", short=True, minimum=1)
    memory_dim: int = _field(
        256,
        "Size of one learned memory entry of the MLP models (episodic entries, "
        "and the conv models' learned ones, have the shape of an image).",
        minimum=1,
    )
    hidden_units: tuple[int, ...] = _field(
        (256, 128),
        "Hidden layer sizes of every MLP (paper: 256, 128); empty for none "
        "(conv models: linear heads).",
    )
    latent_dim: int = _field(32, "|z| (paper: 32 on MNIST).", minimum=1)
    embed_dim: int = _field(
        128, "Size of the matching space for q(a|x) and p(a).", minimum=1
    )
    similarity: str = _field(
        "normalized",
        "Similarity S(m, x): normalized (paper eq. 5), dot or cosine.",
        choices=SIMILARITIES,
        short=True,
    )
    prior: str = _field(
        "learned",
        "Address prior p(a): learned (query e^p) or flat (1/|M|).",
        choices=PRIORS,
        short=True,
    )
    num_samples: int = _field(
        4,
        "Samples K from q per example, for the bound and the estimator (>= 2 "
        "with an address).",
        short=True,
    )
    estimator: str = _field(
        "vimco",
        "Address gradient estimator in training (vma_tf.estimators; evaluation "
        "is always the discrete model's L_K): vimco (paper), vimco_geometric "
        "(Mnih & Rezende 2016 baseline), nvil, rws (reweighted wake-sleep) or "
        "gumbel (relaxed address in training). VMA models only.",
        choices=ESTIMATORS,
        short=True,
    )
    gumbel_temperature: float = _field(
        0.5,
        "Temperature of the relaxed address (gumbel).",
        short=True,
        positive=True,
    )
    straight_through: bool = _field(
        False,
        "gumbel: hard one-hot address forward, relaxed gradient (straight-through).",
        short=True,
    )
    decoder_context: str = _field(
        "all",
        "Where p(x|z, m_a) sees m_a: the first layer only (an MLP on [z, m_a]) "
        "or all layers (skip paths from m_a).",
        choices=DECODER_CONTEXTS,
        short=True,
    )
    skip_mode: str = _field(
        "concat",
        "How the conv decoder joins the skip paths from m_a's pyramid (conv).",
        choices=SKIP_MODES,
        short=True,
    )
    skip_levels: int = _field(
        4,
        "Conv decoder resolutions, coarsest first, with a skip path from m_a's "
        "pyramid (4 = all: 4, 7, 13 and full; 0 = m_a only through its top "
        "vector).",
        choices=SKIP_LEVELS,
        short=True,
    )
    # p(z|m_a) and p(x|z, m_a) always share m's pyramid: we read the paper's
    # "we tie ... the downscaling layers in q(z|m) and p(x|m, z)" as p(z|m).
    # Tying q too measured 5.4 nats worse at 3000 steps (RESULTS.md).
    tie_pyramid: bool = _field(
        False,
        "Also share q(z|x, m_a)'s conv downscaling layers with m_a's pyramid "
        "(the conv VMA; soft attention's q(z|x) always shares the read-out "
        "m(z)'s pyramid).",
        short=True,
    )
    # Under XLA on the 2-core CPU the 13 -> 26 upconv is 1.7x faster this way
    # but the stride-2 convs are slower; the whole Omniglot step measured the
    # same within noise (BENCHMARKS.md), so Keras' layers are the default.
    fast_convs: bool = _field(
        False,
        "Stride-2 and transposed convs as dense convs on space-to-depth / "
        "depth-to-space rearrangements: the same function and variables (conv).",
        short=True,
        resumable=True,
    )
    # On omniglot_fewshot --channels=32, seed 0, 5000 steps, test nll_bound
    # VMA / VAE: 0: 103.31 / 107.48; 1: 101.29 / 106.25; 2: 98.33 / 107.69
    # (RESULTS.md); the Omniglot presets use 2.
    decoder_refine: int = _field(
        0,
        "Extra 3x3 ReLU conv layers at full resolution before the conv "
        "decoder's logits (>= 1 lets the decoder gate the template by z).",
        short=True,
        minimum=0,
    )
    tie_embedders: bool = _field(
        False,
        "One embedding network h for memory entries and queries (h = h^q; "
        "episodic memory only).",
        short=True,
    )
    memory_init_scale: float | None = _field(
        None,
        "Stddev of the N(0, s^2) init of learned memory (default: MLP 1.0, conv 0.5).",
        short=True,
        positive=True,
    )
    decoder_bias_init: str = _field(
        "zero",
        "Initial output bias of the MLP decoder (data_mean: logits of the "
        "training-set pixel means).",
        choices=DECODER_BIAS_INITS,
        short=True,
    )
    prior_z_init: str = _field(
        "glorot",
        "Init of p(z|m_a)'s output layer (standard_normal: zero kernel, "
        "N(0, I) for every entry, so no entry starts out favoured).",
        choices=PRIOR_Z_INITS,
        short=True,
    )
    # With learned N(0, 1) entries in R^256 the Glorot m-half has ~5x the
    # variance of the image half, so the untrained encoder mostly sees m_a.
    encoder_context_init: str = _field(
        "glorot",
        "Init of the m_a-half of q(z|x, m_a)'s first layer (zeros: q(z|x, m_a) "
        "starts as the VAE's q(z|x)).",
        choices=ENCODER_CONTEXT_INITS,
        short=True,
    )

    @property
    def baseline(self) -> str:
        """VIMCO's leave-one-out baseline implied by `estimator` (read-only)."""
        return "geometric" if self.estimator == "vimco_geometric" else "arithmetic"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (help: field metadata)."""

    steps: int = _field(
        100_000,
        "Total optimiser steps (a rerun resumes until it reaches this).",
        short=True,
        minimum=1,
        resumable=True,
    )
    batch_size: int = _field(32, "Targets per step (B).", short=True, minimum=1)
    learning_rate: float = _field(
        3e-4, "Adam learning rate.", short=True, positive=True
    )
    lr_drop_step: int = _field(
        0,
        "From this step on, Adam runs at --lr_after_drop (a multiple of "
        "--log_every; 0: --learning_rate throughout, the paper's setting). "
        "May be added to a run in progress, at or after its newest "
        "checkpoint's step.",
        short=True,
        minimum=0,
        resumable=True,
    )
    lr_after_drop: float = _field(
        1e-4,
        "Adam learning rate from --lr_drop_step on.",
        short=True,
        positive=True,
        resumable=True,
    )
    seed: int = _field(0, "Seeds parameters, data order and every sample.", short=True)
    log_every: int = _field(
        100,
        "Steps between train-metric lines (eval_every, checkpoint_every "
        "and lr_drop_step are multiples of it; steps need not be).",
        short=True,
        minimum=1,
        resumable=True,
    )
    eval_every: int = _field(
        1000, "Steps between evaluations.", short=True, resumable=True
    )
    patience: int = _field(
        0,
        "Early stop: end training once the periodic evaluation's nll_bound "
        "(valid split if evaluated, else test) has not improved for this many "
        "steps; 0: train to --steps.",
        short=True,
        minimum=0,
        resumable=True,
    )
    checkpoint_every: int = _field(
        1000, "Steps between checkpoints.", short=True, resumable=True
    )
    keep_checkpoints: int = _field(3, "Checkpoints kept.", minimum=1, resumable=True)
    jit: bool = _field(
        True,
        "Compile steps with XLA (jit_compile=True).",
        short=True,
        resumable=True,
    )
    # E.g. a memory-size curriculum: mnist_recall with |M| = 16, then 256.
    init_from: str | None = _field(
        None,
        "Warm start: initial weights from this run directory's newest "
        "checkpoint (optimizer, step and seed streams start fresh; only "
        "without a checkpoint of its own; a resumed run keeps it).",
        short=True,
        resumable=True,
    )
    strategy: str = _field(
        "default",
        "tf.distribute strategy: default (one device), mirrored (all local "
        "GPUs), multi_worker (MultiWorkerMirroredStrategy from $TF_CONFIG); "
        "batch_size stays the global batch.",
        choices=STRATEGIES,
        short=True,
        resumable=True,
    )
    # Batch s is a pure function of (seed, s) and the step is the
    # checkpointed optimizer counter, so a run killed at any step resumes
    # bit-equal; on CPU our kernels are deterministic anyway.
    deterministic: bool = _field(
        False,
        "tf.config.experimental.enable_op_determinism(): every kernel "
        "deterministic (GPU too); with it a run killed at any step resumes "
        "bit-exactly.",
        short=True,
        resumable=True,
    )
    precision: str = _field(
        "float32",
        "Keras dtype policy of the networks: float32, or mixed_bfloat16 "
        "(bfloat16 activations and matmuls; float32 variables, optimizer, "
        "log-probabilities and log-weights). Checkpoints are the same either way.",
        choices=PRECISIONS,
        short=True,
        resumable=True,
    )
    skip_nonfinite: bool = _field(
        False,
        "Skip (no weight/optimizer update) a step with a NaN/Inf loss or "
        "gradient and count it in the skipped_steps metric, instead of "
        "stopping.",
        short=True,
        resumable=True,
    )

    def learning_rate_at(self, step: int) -> float:
        """Adam's learning rate for the optimiser step after `step` steps."""
        if self.lr_drop_step and step >= self.lr_drop_step:
            return self.lr_after_drop
        return self.learning_rate


# The JSON values each annotated field type takes (bool is not an int here).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "str | None": (str, type(None)),
    "float | None": (int, float, type(None)),
    "tuple[int, ...]": (list, tuple),
}


def _typed(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (one section of a config.json) with each known field checked
    against its annotated type: floats from ints, tuples from lists.

    Raises:
        ConfigError: a value of another type (`"1"` for an int, `"false"`
            for a bool), naming `section.field`.
    """
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue  # The constructor names a missing field.
        value, allowed = out[f.name], _JSON_TYPES[f.type]
        ok = isinstance(value, allowed) and (
            bool in allowed or not isinstance(value, bool)
        )
        if ok and f.type == "tuple[int, ...]":
            value = tuple(value)
            ok = all(type(u) is int for u in value)
        elif ok and float in allowed and value is not None:
            value = float(value)
        if not ok:
            raise ConfigError(f"{section}.{f.name}={value!r} is not {f.type}")
        out[f.name] = value
    return out


def legacy_data_values(d: Mapping[str, Any]) -> dict[str, Any]:
    """The `data` fields added after runs were made, with the values a
    config.json `d` (`Config.to_dict()` output) written before them reads
    as: the settings the run was evaluated with.

    Raises:
        KeyError: `d` has no `train` section.
    """
    return {
        # Before `eval_seed`, the evaluation sets were drawn with train.seed.
        "eval_seed": d["train"].get("seed", 0),
        # Before `eval_subset`, a partial evaluation read the first batches.
        "eval_subset": "first",
    }


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
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Reads `to_dict()` output, also of older versions (a `baseline`
        field: `"geometric"` with vimco is vimco_geometric)."""
        try:
            if not isinstance(d.get("name"), str):
                raise ConfigError(f"name={d.get('name')!r} is not a string")
            sections = {}
            for name in ("data", "model", "train"):
                if not isinstance(d[name], Mapping):
                    raise ConfigError(f"{name} is not a mapping")
                sections[name] = dict(d[name])
            model = sections["model"]
            geometric = model.pop("baseline", None) == "geometric"
            if geometric and model.get("estimator", "vimco") == "vimco":
                model["estimator"] = "vimco_geometric"
            data = {**legacy_data_values(d), **sections["data"]}
            return cls(
                name=d["name"],
                data=DataConfig(**_typed("data", DataConfig, data)),
                model=ModelConfig(**_typed("model", ModelConfig, model)),
                train=TrainConfig(**_typed("train", TrainConfig, sections["train"])),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"not a vma_tf config: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"not a vma_tf config: {e}") from None
