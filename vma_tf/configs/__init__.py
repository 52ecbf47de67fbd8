"""Experiment configuration: the schema, the paper's presets, validation.

A `Config` is fully resolved (no defaults hidden elsewhere); `train_and_evaluate`
writes it to `WORKDIR/config.json`, and `Config.from_dict` reads it back.

    schema      the frozen dataclasses (each field's help, choices and bounds
                in its metadata), `ConfigError` and every choice list
    fields      `FIELDS`: the schema as data (`FieldSpec` per field), from
                which `launchers.common` generates the flags
    overrides   `override(config, memory_size=16, **{"model.prior": "flat"})`
    validation  `validate(config)`: one-line errors naming the flag
    presets     `PRESETS` / `get_preset(name)`

No TensorFlow import: launchers validate configs before TensorFlow loads.
"""

from vma_tf.configs.fields import (
    FIELDS,
    FIELDS_BY_NAME,
    RESUMABLE_FIELDS,
    SECTIONS,
    FieldSpec,
    episode_sizes,
    flag_name,
    periodic_splits,
    x_shape,
)
from vma_tf.configs.overrides import field_spec, load_json, override
from vma_tf.configs.presets import DEFAULT_PRESET, PRESETS, get_preset
from vma_tf.configs.schema import (
    ARCHITECTURES,
    BASELINES,
    DATASETS,
    DECODER_BIAS_INITS,
    DECODER_CONTEXTS,
    ENCODER_CONTEXT_INITS,
    EPISODIC_DATASETS,
    ESTIMATORS,
    KINDS,
    MEMORIES,
    PRECISIONS,
    PRIOR_Z_INITS,
    PRIORS,
    SIMILARITIES,
    SKIP_LEVELS,
    SKIP_MODES,
    STRATEGIES,
    TASKS,
    TUNERS,
    VIMCO_ESTIMATORS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    legacy_data_values,
)
from vma_tf.configs.validation import (
    DRAWERS_PER_CHARACTER,
    SPLIT_SIZES,
    validate,
)

__all__ = [
    "ARCHITECTURES",
    "BASELINES",
    "DATASETS",
    "DECODER_BIAS_INITS",
    "DECODER_CONTEXTS",
    "DEFAULT_PRESET",
    "DRAWERS_PER_CHARACTER",
    "ENCODER_CONTEXT_INITS",
    "EPISODIC_DATASETS",
    "ESTIMATORS",
    "FIELDS",
    "FIELDS_BY_NAME",
    "KINDS",
    "MEMORIES",
    "PRECISIONS",
    "PRESETS",
    "PRIORS",
    "PRIOR_Z_INITS",
    "RESUMABLE_FIELDS",
    "SECTIONS",
    "SIMILARITIES",
    "SKIP_LEVELS",
    "SKIP_MODES",
    "SPLIT_SIZES",
    "STRATEGIES",
    "TASKS",
    "TUNERS",
    "VIMCO_ESTIMATORS",
    "Config",
    "ConfigError",
    "DataConfig",
    "FieldSpec",
    "ModelConfig",
    "TrainConfig",
    "episode_sizes",
    "field_spec",
    "flag_name",
    "get_preset",
    "load_json",
    "override",
    "periodic_splits",
    "validate",
    "x_shape",
]
