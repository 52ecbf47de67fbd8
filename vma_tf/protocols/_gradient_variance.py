"""`gradient_variance`: issue 7. For the run's final checkpoint and one fixed
test batch, the variance over `num_draws` seeds of each estimator's gradient
of the addressing parameters (same K as training); `vma_tf.gradient_variance`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from vma_tf.configs import ConfigError
from vma_tf.protocols.common import Options, Result, Run, require


@dataclasses.dataclass(frozen=True)
class GradientVarianceOptions(Options):
    """Options of `gradient_variance`.

    Attributes:
        estimators: names from `vma_tf.estimators.ESTIMATORS` (None or empty:
            all the model supports; `"nvil"` needs a run trained with it).
        num_draws: gradient draws per estimator (seeds `(seed, i)`), >= 2.
        seed: seed of the draws.
        jit: compile the gradient with XLA.
        all_checkpoints: also measure at every checkpoint the run kept
            (`"by_step"`, oldest first: the variance along the training
            curve); the newest is restored again at the end.
    """

    protocol = "gradient_variance"
    estimators: Sequence[str] | None = None
    num_draws: int = 100
    seed: int = 0
    jit: bool = True
    all_checkpoints: bool = False


def _estimators(run: Run, names: Sequence[str] | None) -> list[str]:
    """The estimators to measure: `names`, checked, or all the model supports.

    Raises:
        ConfigError: an unknown estimator, or nvil for a run without its
            baseline network.
    """
    from vma_tf import estimators as est

    model = run.model
    if not names:
        return [
            e for e in est.ESTIMATORS if e != "nvil" or model.nvil_baseline is not None
        ]
    for name in names:
        if name not in est.ESTIMATORS:
            raise ConfigError(
                f"--estimators={name!r} is not allowed; choose from "
                f"{', '.join(est.ESTIMATORS)}"
            )
        if name == "nvil" and model.nvil_baseline is None:
            raise ConfigError(
                "--estimators=nvil needs a run trained with --estimator=nvil (its "
                f"baseline network); {run.workdir} was trained with "
                f"{run.config.model.estimator}"
            )
    return list(names)


def gradient_variance_protocol(
    run: Run, options: GradientVarianceOptions | None = None, **keywords
) -> Result:
    """Address-gradient variance of estimators on a fixed model and batch.

    Args:
        run: a restored VMA run (`load`).
        options: `GradientVarianceOptions` (default: the defaults).
        **keywords: `GradientVarianceOptions` fields, overriding `options`.

    Returns:
        `({estimator: summary, "split", "batch_size", "num_samples",
        "training_estimator", ["by_step": {step: {estimator: summary}}]}, {})`;
        summaries from `gradient_variance.summarize`, on the first batch of
        the run's first evaluation split.

    Raises:
        ConfigError: an unknown option, not a VMA run, `num_draws` < 2, or an
            estimator the run cannot measure.
    """
    o = GradientVarianceOptions.resolve(options, keywords)
    from vma_tf import gradient_variance

    require(run, "gradient_variance", run.config.model.kind == "vma", "a VMA run")
    if o.num_draws < 2:
        raise ConfigError(f"--num_draws={o.num_draws} must be >= 2")
    model = run.model
    names = _estimators(run, o.estimators)
    split, ds = next(iter(run.data.final_evals.items()))
    batch = next(iter(ds))
    results = {
        "split": split,
        "batch_size": int(batch["x"].shape[0]),
        "num_samples": model.num_samples,
        "training_estimator": run.config.model.estimator,
    }

    def measure():
        return {
            name: gradient_variance.address_gradient_variance(
                model, batch["x"], batch.get("memory"), name, o.num_draws, o.seed, o.jit
            )
            for name in names
        }

    results.update(measure())
    if o.all_checkpoints:
        results["by_step"] = _by_step(run, measure)
    return results, {}


def _by_step(run: Run, measure) -> dict:
    """`measure()` at every readable checkpoint the run kept, oldest first.

    An unreadable one (truncated or garbage files, skipped by `load` too) is
    left out with a warning on stderr.

    Args:
        run: the run; the checkpoint it was loaded from (`run.step`) is
            restored again at the end.
        measure: the measurement, `() -> {estimator: summary}`.

    Returns:
        `{str(step): measure()}`.
    """
    from vma_tf import checkpointing
    from vma_tf.workdir import step_of

    checkpoint = checkpointing.make_checkpoint(run.model)
    paths = checkpointing.numbered_checkpoints(run.workdir / "checkpoints")
    by_step = {}
    for path in reversed(paths):  # Oldest first.
        try:
            checkpointing.restore(checkpoint, path)
        except checkpointing.UNREADABLE as e:
            reason = checkpointing.unreadable_reason(e)
            print(
                f"warning: checkpoint {path} is unreadable ({reason}); not measured",
                file=sys.stderr,
            )
            continue
        by_step[str(step_of(path))] = measure()
    loaded = [p for p in paths if step_of(p) == run.step]
    checkpointing.restore(checkpoint, loaded[0])
    return by_step
