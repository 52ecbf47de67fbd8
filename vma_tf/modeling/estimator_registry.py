"""Registry of the address gradient estimators: name -> `GradientEstimator`.

In the manner of DeepMind's `mc_gradients` (a dict from an estimator's name
to the functions that compute it), every estimator of
`vma_tf.configs.ESTIMATORS` is one `GradientEstimator` here: which terms it
trains on, an optional update of running statistics, and its surrogate
objective. A model looks its estimator up once (`lookup`); nothing else tests
estimator names. The surrogates themselves are the pure functions of the
`[K, B]` log-weights in `vma_tf.estimators`.

    name              training terms                  surrogate
    vimco             discrete (`compute_terms`)      `vimco_objective`, arithmetic
    vimco_geometric   discrete                        `vimco_objective`, geometric
    nvil              discrete; updates c and v       `nvil_objective`
    rws               discrete, z fixed               `rws_objective`
    gumbel            relaxed (`compute_relaxed_terms`)  the relaxed L_K

Models without a discrete address train every estimator as `IWAE` (the
K-sample bound's own gradient): they look up `IWAE` whatever the name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from vma_tf import estimators
from vma_tf.configs.schema import ESTIMATORS


@dataclasses.dataclass(frozen=True)
class GradientEstimator:
    """How one estimator trains a `LatentVariableModel`.

    Attributes:
        name: the config name (`ModelConfig.estimator`), or `"iwae"`.
        terms: `(model, x, memory, seed) -> Terms`, the K-sample terms the
            estimator trains on (`model.num_samples` samples).
        objective: `(model, terms, x) -> [B]` surrogate to maximise, for
            terms that carry `log_q_a` (terms without one, of models without
            an address or relaxed, always train on L_K itself).
        update_statistics: `(model, terms, x) -> None`, run in training
            after `objective` (NVIL's running mean and variance: the signal
            uses those of the batches before), or None.
        learned_baseline: the model needs an `NVILBaseline` b(x) (the
            builders add one to a VMA).
    """

    name: str
    terms: Callable
    objective: Callable
    update_statistics: Callable | None = None
    learned_baseline: bool = False


def discrete_terms(model, x, memory, seed):
    """The discrete model's terms, `model.compute_terms`."""
    return model.compute_terms(x, memory, model.num_samples, seed)


def fixed_z_terms(model, x, memory, seed):
    """The discrete model's terms with z held fixed (reweighted wake-sleep)."""
    return model.compute_terms(x, memory, model.num_samples, seed, stop_z_gradient=True)


def relaxed_terms(model, x, memory, seed):
    """The relaxed (Gumbel-softmax) model's terms, `compute_relaxed_terms`."""
    return model.compute_relaxed_terms(x, memory, model.num_samples, seed)


def _bound(model, terms, x):
    """`[B]` L_K: the IWAE gradient."""
    return estimators.iwae_bound(terms.log_weights)


def _vimco(baseline: str) -> Callable:
    def objective(model, terms, x):
        return estimators.vimco_objective(terms.log_weights, terms.log_q_a, baseline)

    return objective


def nvil_baseline(model):
    """The model's `NVILBaseline`; raises ValueError if it has none."""
    if model.nvil_baseline is None:
        raise ValueError(
            "estimator 'nvil' needs a model built with an NVILBaseline "
            "(ModelConfig.estimator='nvil')"
        )
    return model.nvil_baseline


def _nvil_value(model, x):
    """`[B]` b(x) in the model's head dtype."""
    return tf.cast(nvil_baseline(model)(x), model.head_dtype)


def _nvil_objective(model, terms, x):
    nvil = nvil_baseline(model)
    return estimators.nvil_objective(
        terms.log_weights,
        terms.log_q_a,
        _nvil_value(model, x),
        nvil.centre,
        nvil.scale(),
    )


def _nvil_update(model, terms, x):
    """Moves NVIL's running mean and variance towards this batch."""
    nvil_baseline(model).update(
        *estimators.nvil_signal_statistics(terms.log_weights, _nvil_value(model, x))
    )


def _rws_objective(model, terms, x):
    if terms.log_q is None:
        raise ValueError("estimator 'rws' needs terms with log_q")
    return estimators.rws_objective(terms.log_weights, terms.log_q)


def _gumbel_objective(model, terms, x):
    # Relaxed terms carry no log_q_a and train on L_K before reaching here.
    raise ValueError("estimator 'gumbel' needs relaxed terms (compute_relaxed_terms)")


IWAE = GradientEstimator("iwae", discrete_terms, _bound)

REGISTRY: dict[str, GradientEstimator] = {
    "vimco": GradientEstimator("vimco", discrete_terms, _vimco("arithmetic")),
    "vimco_geometric": GradientEstimator(
        "vimco_geometric", discrete_terms, _vimco("geometric")
    ),
    "nvil": GradientEstimator(
        "nvil", discrete_terms, _nvil_objective, _nvil_update, learned_baseline=True
    ),
    "rws": GradientEstimator("rws", fixed_z_terms, _rws_objective),
    "gumbel": GradientEstimator("gumbel", relaxed_terms, _gumbel_objective),
}
assert tuple(REGISTRY) == ESTIMATORS, "one registry entry per configs.ESTIMATORS"

# Legacy spelling: `estimator="vimco"` with the `"geometric"` baseline.
_ALIASES = {("vimco", "geometric"): "vimco_geometric"}


def canonical_name(name: str, baseline: str = "arithmetic") -> str:
    """The registry name of `name` (with the legacy VIMCO `baseline`).

    Args:
        name: one of `configs.ESTIMATORS`.
        baseline: `"arithmetic"` or `"geometric"` (old configs: `"vimco"`
            with `"geometric"` is `"vimco_geometric"`).

    Returns:
        A key of `REGISTRY`.

    Raises:
        ValueError: `name` is not one of `configs.ESTIMATORS`.
    """
    estimators.check_estimator(name)
    return _ALIASES.get((name, baseline), name)


def lookup(name: str, has_addresses: bool = True) -> GradientEstimator:
    """The `GradientEstimator` of `name` (`IWAE` for models without an address).

    Raises:
        ValueError: `name` is not one of `configs.ESTIMATORS`.
    """
    estimators.check_estimator(name)
    return REGISTRY[name] if has_addresses else IWAE
