"""The search space of `launchers.tune` (`vma_tf.tuning`), importable without
keras-tuner or TensorFlow: the launcher checks its flags against it first."""

from __future__ import annotations

from typing import Any

from vma_tf.configs import SIMILARITIES, Config

# K of every trial's objective: L_K tightens as K grows, so each trial's own
# periodic bound (at its own K, a searched value) would favour the largest K
# whatever the model. The largest K searched.
OBJECTIVE_SAMPLES = 8


def search_space(config: Config) -> dict[str, tuple[Any, ...]]:
    """The values searched for `config`'s preset, `name -> choices` (config
    field names: every trial sets them)."""
    m = config.model
    space: dict[str, tuple[Any, ...]] = {
        "learning_rate": (1e-4, 3e-4),
        "weight_decay": (0.0, 1e-4, 3e-4),
    }
    if m.kind != "vae":
        space["embed_dim"] = (64, 128, 256)
        space["similarity"] = SIMILARITIES
    space["num_samples"] = (2, 4, OBJECTIVE_SAMPLES)
    if m.architecture == "conv":
        space["channels"] = (16, 32, 64)
    return space
