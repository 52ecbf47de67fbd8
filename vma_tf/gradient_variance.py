"""Variance of the address gradient of each estimator (issue 7).

For a fixed model and a fixed batch, the training gradient of the
addressing parameters (the memory and query embedders h, h^q and the prior
query e^p of `AddressingHead`) is drawn `num_draws` times with different
seeds (same K), and summarised by the total variance tr Cov[g] (the sum of
the per-coordinate variances), the squared norm of the mean gradient and
their ratio. Estimators that estimate different things (the biased `"rws"`
q-update, the relaxed `"gumbel"` gradient) have their own means; the ratio
tr Cov / |E g|^2 puts them on one scale (the inverse of a signal-to-noise
ratio).

Every draw uses the model's state as it is: NVIL's running statistics are
not updated (`update_statistics=False`), so the draws are exchangeable. The
same seed gives the same numbers.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vma_tf import estimators


def address_variables(model) -> list:
    """The addressing parameters of a VMA model (what the estimators differ on)."""
    if not getattr(model, "has_addresses", False):
        raise ValueError(
            f"gradient variance of the address needs a VMA model; got "
            f"{type(model).__name__}"
        )
    return list(model.addressing.trainable_variables)


def gradient_draws(
    model,
    x,
    memory,
    estimator: str,
    num_draws: int,
    seed: int = 0,
    jit: bool = True,
) -> np.ndarray:
    """`num_draws` training gradients of the addressing parameters.

    Args:
        model: a built VMA model.
        x: `[B, *x]` the fixed batch.
        memory: `[|M|, *entry]` its memory (None for learned memory).
        estimator: one of `estimators.ESTIMATORS` (`"nvil"` needs a model
            trained with it: its baseline network and running statistics).
        num_draws: N >= 2.
        seed: draw i uses the stateless seed `(seed, i)`.
        jit: compile the gradient with XLA.

    Returns:
        `[N, P]` float64 flattened gradients of the loss (negated surrogate).
    """
    estimators.check_estimator(estimator)
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2; got {num_draws}")
    variables = address_variables(model)
    x = tf.convert_to_tensor(x)
    memory = None if memory is None else tf.convert_to_tensor(memory)

    @tf.function(jit_compile=jit)
    def draw(seed_pair):
        with tf.GradientTape() as tape:
            loss, _ = model.loss_and_terms(
                x,
                memory,
                seed_pair,
                training=True,
                estimator=estimator,
                update_statistics=False,
            )
        grads = tape.gradient(loss, variables)
        return tf.concat(
            [tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads], axis=0
        )

    return np.stack(
        [draw(tf.constant([seed, i], tf.int32)).numpy() for i in range(int(num_draws))]
    )


def summarize(draws: np.ndarray) -> dict:
    """tr Cov, |E g|^2 and their ratio, each estimated without bias.

    The squared norm of the draws' mean overestimates |E g|^2 by tr Cov / N
    (E|mean|^2 = |E g|^2 + tr Cov / N), so the plug-in ratio
    tr Cov / |mean|^2 stays below N however noisy the gradient:
    `relative_variance` divides by |mean|^2 - tr Cov / N instead (inf when
    that is <= 0: the mean is not resolved from the noise with N draws).

    Args:
        draws: `[N, P]` gradient draws, N >= 2.

    Returns:
        `total_variance` (tr Cov, ddof=1), `mean_sq_norm` (|mean|^2, the
        plug-in), `mean_sq_norm_unbiased`, `relative_variance` (tr Cov over
        the unbiased |E g|^2), `relative_variance_plugin` (over |mean|^2;
        = 1 / (1 / relative_variance + 1 / N)), `num_draws`,
        `num_parameters`.
    """
    draws = np.asarray(draws, np.float64)
    num_draws = int(draws.shape[0])
    mean = draws.mean(axis=0)
    total_variance = float(draws.var(axis=0, ddof=1).sum())
    mean_sq_norm = float(np.sum(mean**2))
    unbiased = mean_sq_norm - total_variance / num_draws
    ratio = lambda denominator: (
        total_variance / denominator if denominator > 0 else float("inf")
    )
    return {
        "total_variance": total_variance,
        "mean_sq_norm": mean_sq_norm,
        "mean_sq_norm_unbiased": unbiased,
        "relative_variance": ratio(unbiased),
        "relative_variance_plugin": ratio(mean_sq_norm),
        "num_draws": num_draws,
        "num_parameters": int(draws.shape[1]),
    }


def address_gradient_variance(
    model,
    x,
    memory,
    estimator: str,
    num_draws: int = 100,
    seed: int = 0,
    jit: bool = True,
) -> dict:
    """`summarize(gradient_draws(...))`: the variance of one estimator's
    address gradient for a fixed model and batch (see `gradient_draws`)."""
    return summarize(gradient_draws(model, x, memory, estimator, num_draws, seed, jit))
