"""Multi-sample bounds and the VIMCO gradient estimator as pure functions.

Everything here acts on a tensor of log importance weights `log_weights` of
shape `[K, B]` (K samples from q for each of B examples):

    log w_k = log p(x, a_k, z_k) - log q(a_k, z_k | x).

The K-sample bound (paper eq. 7) is L_K = log (1/K) sum_k w_k.

`vimco_objective` returns a *surrogate* whose value is L_K and whose gradient
is the VIMCO estimator of paper eq. (8):

* reparameterised paths (z, and every parameter reached through
    `log_weights`) get the importance-weighted gradient sum_k w~_k grad log w_k
    (identical to IWAE);
* the discrete address gets the score-function term
    sum_k (L - L_{-k}) grad log q(a_k | x), with the leave-one-out baseline
    L_{-k}.

Because `log_weights` itself contains `-log q(a_k | x)`, the total coefficient
on grad log q(a_k | x) is (L - L_{-k}) - w~_k, which is the learning signal
omega_phi^(k) printed in the paper (see `address_gradient_coefficients`).

Two baselines L_{-k} are available:

* `"arithmetic"` (the paper's form, default): the log of the arithmetic mean of
    the other K - 1 weights (what `tfp.stats.log_loomean_exp` computes).
* `"geometric"` (Mnih & Rezende 2016, the original VIMCO): w_k is replaced by
    the geometric mean of the others (what `tfp.stats.log_soomean_exp`
    computes).

See `leave_one_out_bounds` for why they are computed by a masked logsumexp.

Alternative estimators for the address gradient (issue 7; the paper's section
2.1 names them without investigating them). Each is a pure function returning
a `[B]` surrogate to *maximise* whose value is the K-sample bound L_K of the
log-weights it is given; they differ only in the gradient:

* `"vimco"` / `"vimco_geometric"`: `vimco_objective` with the arithmetic
    (paper) or geometric (Mnih & Rezende 2016) leave-one-out baseline.
* `"nvil"` (`nvil_objective`, Mnih & Gregor 2014): REINFORCE with one learning
    signal per example, (L_K - c - b(x)) / s, where b(x) is a learned
    input-dependent baseline, c a running mean and s = max(1, running std) a
    variance normalisation; b(x) is regressed onto L_K - c. Unbiased for
    s = 1; with s > 1 the score part of the gradient is scaled by 1/s (a
    positive per-step scale, as in NVIL).
* `"rws"` (`rws_objective`, reweighted wake-sleep, Bornschein & Bengio 2015):
    the model gets the importance-weighted gradient sum_k w~_k grad log p; q
    gets the wake-phase update sum_k w~_k grad log q(a_k, z_k | x) with the
    samples held fixed, i.e. -grad KL(w~ || q). Biased (a different objective
    for q), no score-function term.
* `"gumbel"` (`gumbel_objective`, Jang et al. / Maddison et al. 2017): the
    bound of a model whose address is a relaxed one-hot vector; the gradient
    is pathwise through the relaxation. Biased for the discrete model, which
    is what evaluation uses.
"""

from __future__ import annotations

import tensorflow as tf

# The names are defined once, in the config schema (no TensorFlow import
# there); `vma_tf.modeling.estimator_registry` maps each to its training terms
# and surrogate.
from vma_tf.configs.schema import BASELINES, ESTIMATORS

# Estimators whose expected gradient is the gradient of E[L_K] (tested by
# exact enumeration in tests/test_estimators.py).
UNBIASED_ESTIMATORS = ("vimco", "vimco_geometric", "nvil")


def _check_log_weights(log_weights: tf.Tensor, min_samples: int) -> tf.Tensor:
    log_weights = tf.convert_to_tensor(log_weights)
    if log_weights.shape.rank is not None and log_weights.shape.rank < 1:
        raise ValueError(
            f"log_weights must have shape [K, B]; got rank {log_weights.shape.rank}"
        )
    num_samples = log_weights.shape[0]
    if num_samples is not None and num_samples < min_samples:
        raise ValueError(
            f"num_samples (K) must be >= {min_samples} for this estimator; got "
            f"K={num_samples} (VIMCO's leave-one-out baseline needs another sample)"
        )
    return log_weights


def iwae_bound(log_weights: tf.Tensor) -> tf.Tensor:
    """K-sample importance-weighted bound L_K = log mean_k exp(log_weights).

    Args:
        log_weights: `[K, B]` log importance weights.

    Returns:
        `[B]` bound per example. Its gradient is the IWAE gradient.
    """
    log_weights = _check_log_weights(log_weights, 1)
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)


def leave_one_out_bounds(
    log_weights: tf.Tensor, baseline: str = "arithmetic"
) -> tuple[tf.Tensor, tf.Tensor]:
    """The bound L_K and its leave-one-out baselines L_{-k}.

    L_{-k} is computed as a masked `logsumexp` over the other samples, which is
    exact to rounding for any spread of the weights. (The same quantities as
    `tfp.stats.log_loomean_exp` / `log_soomean_exp`, which subtract w_k from
    the total and so lose up to ~0.7 nats on the dominant sample in float32
    once log-weights spread over ~10 nats; `tests/test_estimators.py`
    measures both.) Cost O(K^2 B), negligible for training-time K.

    Args:
        log_weights: `[K, B]` log importance weights, K >= 2.
        baseline: `"arithmetic"` (log of the mean of the other K-1 weights) or
            `"geometric"` (w_k replaced by the geometric mean of the others,
            then the mean of all K).

    Returns:
        `(bound, loo)`: `bound` `[B]` is L_K; `loo` `[K, B]` is L_{-k}.
    """
    log_weights = _check_log_weights(log_weights, 2)
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}")
    k = tf.shape(log_weights)[0]
    kf = tf.cast(k, log_weights.dtype)
    others = log_weights[tf.newaxis]  # [1(k), K(j), B]
    left_out = tf.eye(k, dtype=tf.bool)[:, :, tf.newaxis]  # [K(k), K(j), 1]
    if baseline == "arithmetic":
        fill = tf.constant(-float("inf"), log_weights.dtype)
        count = kf - 1.0
    else:
        total = tf.reduce_sum(log_weights, axis=0, keepdims=True)
        fill = ((total - log_weights) / (kf - 1.0))[:, tf.newaxis]  # [K, 1, B]
        count = kf
    masked = tf.where(left_out, fill, others)  # [K, K, B]
    loo = tf.reduce_logsumexp(masked, axis=1) - tf.math.log(count)
    return iwae_bound(log_weights), loo


def learning_signals(log_weights: tf.Tensor, baseline: str = "arithmetic") -> tf.Tensor:
    """VIMCO's per-sample learning signals L - L_{-k} (no gradient flows).

    Args:
        log_weights: `[K, B]` log importance weights, K >= 2.
        baseline: `"arithmetic"` or `"geometric"`.

    Returns:
        `[K, B]` learning signals, gradients stopped.
    """
    bound, loo = leave_one_out_bounds(tf.stop_gradient(log_weights), baseline)
    return bound[tf.newaxis] - loo


def normalized_weights(log_weights: tf.Tensor) -> tf.Tensor:
    """Self-normalised importance weights w~_k = w_k / sum_j w_j, `[K, B]`."""
    return tf.nn.softmax(log_weights, axis=0)


def address_gradient_coefficients(
    log_weights: tf.Tensor, baseline: str = "arithmetic"
) -> tf.Tensor:
    """The paper's omega_phi^(k) = (L - L_{-k}) - w~_k, `[K, B]`.

    This is the total coefficient the VIMCO gradient puts on
    grad log q(a_k | x) when `log_weights` includes `-log q(a_k | x)`.
    """
    return learning_signals(log_weights, baseline) - tf.stop_gradient(
        normalized_weights(log_weights)
    )


def vimco_objective(
    log_weights: tf.Tensor, log_q_a: tf.Tensor, baseline: str = "arithmetic"
) -> tf.Tensor:
    """Surrogate with value L_K and the VIMCO gradient (paper eq. 8).

    Maximise it (minimise its negation). `log_weights` must be differentiable
    with respect to every parameter (including through `-log q(a_k|x)`);
    `log_q_a` is the log-probability of the sampled addresses, differentiable
    with respect to the addressing parameters. Addresses themselves are
    integers and carry no gradient.

    Args:
        log_weights: `[K, B]` log importance weights, K >= 2.
        log_q_a: `[K, B]` log q(a_k | x) of the sampled addresses.
        baseline: `"arithmetic"` (paper, default) or `"geometric"` (original
            VIMCO).

    Returns:
        `[B]` surrogate objective; its value equals `iwae_bound(log_weights)`.
    """
    bound, _ = leave_one_out_bounds(log_weights, baseline)
    signals = learning_signals(log_weights, baseline)
    score = tf.reduce_sum(signals * log_q_a, axis=0)
    # Adds zero to the value, signals * grad log q to the gradient.
    return bound + (score - tf.stop_gradient(score))


def _zero_valued(t: tf.Tensor) -> tf.Tensor:
    """`t - stop_gradient(t)`: adds nothing to a value, grad t to a gradient."""
    return t - tf.stop_gradient(t)


def nvil_objective(
    log_weights: tf.Tensor,
    log_q_a: tf.Tensor,
    baseline_value: tf.Tensor,
    centre: tf.Tensor | float = 0.0,
    scale: tf.Tensor | float = 1.0,
) -> tf.Tensor:
    """Surrogate with value L_K and the NVIL gradient (Mnih & Gregor 2014).

    The gradient is the IWAE gradient of the reparameterised paths plus
    sum_k l * grad log q(a_k | x) with the learning signal
    l = (L_K - centre - b(x)) / scale shared by the K addresses of an example,
    plus the gradient of -(L_K - centre - b(x))^2 / 2 for the baseline b(x).
    As b(x) and `centre` do not depend on the addresses,
    E[(b + centre) sum_k grad log q(a_k|x)] = 0: unbiased for `scale` = 1.

    Args:
        log_weights: `[K, B]` log importance weights (with `-log q(a_k|x)`).
        log_q_a: `[K, B]` log q(a_k | x) of the sampled addresses.
        baseline_value: `[B]` learned baseline b(x), differentiable with
            respect to its own parameters only.
        centre: scalar running mean c of L_K - b(x) (no gradient).
        scale: scalar > 0 dividing the centred signal, max(1, running std)
            in NVIL (no gradient).

    Returns:
        `[B]` surrogate; its value equals `iwae_bound(log_weights)`.
    """
    log_weights = _check_log_weights(log_weights, 1)
    bound = iwae_bound(log_weights)
    centre = tf.stop_gradient(tf.cast(centre, bound.dtype))
    scale = tf.stop_gradient(tf.cast(scale, bound.dtype))
    baseline_value = tf.cast(baseline_value, bound.dtype)
    residual = tf.stop_gradient(bound) - centre - baseline_value  # [B]
    signal = tf.stop_gradient(residual) / scale
    score = signal * tf.reduce_sum(log_q_a, axis=0)
    regression = -0.5 * tf.square(residual)  # Gradient only to b(x).
    return bound + _zero_valued(score) + _zero_valued(regression)


def nvil_signal_statistics(
    log_weights: tf.Tensor, baseline_value: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch mean and variance of L_K - b(x), for NVIL's running averages.

    Args:
        log_weights: `[K, B]` log importance weights.
        baseline_value: `[B]` learned baseline b(x).

    Returns:
        `(mean, variance)` scalars, gradients stopped.
    """
    bound = iwae_bound(tf.stop_gradient(log_weights))
    residual = bound - tf.stop_gradient(tf.cast(baseline_value, bound.dtype))
    mean, variance = tf.nn.moments(residual, axes=[0])
    return mean, variance


def rws_objective(log_weights: tf.Tensor, log_q: tf.Tensor) -> tf.Tensor:
    """Surrogate with value L_K and the reweighted wake-sleep gradient.

    Both inputs must be computed from samples (a_k, z_k) that carry no
    gradient (z not reparameterised: `VMA.compute_terms(stop_z_gradient=True)`).
    The gradient is sum_k w~_k grad [log p(x, a_k, z_k) + log q(a_k, z_k | x)]
    with w~ the normalised weights held fixed: for the model's parameters
    the importance-weighted (IWAE) gradient, for q's the wake-phase update
    -grad_phi KL(w~ || q) = sum_k w~_k grad log q(a_k, z_k|x) (for parameters
    shared by p and q, the sum of both).

    Args:
        log_weights: `[K, B]` log p(x, a_k, z_k) - log q(a_k, z_k | x).
        log_q: `[K, B]` log q(a_k, z_k | x) at the same fixed samples.

    Returns:
        `[B]` surrogate; its value equals `iwae_bound(log_weights)`.
    """
    log_weights = _check_log_weights(log_weights, 1)
    w = tf.stop_gradient(normalized_weights(log_weights))
    log_p = log_weights + log_q
    update = tf.reduce_sum(w * (log_p + log_q), axis=0)
    return tf.stop_gradient(iwae_bound(log_weights)) + _zero_valued(update)


def gumbel_objective(log_weights: tf.Tensor) -> tf.Tensor:
    """The K-sample bound of the relaxed model (Gumbel-softmax address).

    `log_weights` come from relaxed one-hot addresses
    (`VMA.compute_relaxed_terms`), so every parameter, including the
    addressing ones, gets a pathwise gradient; no score-function term.

    Args:
        log_weights: `[K, B]` relaxed log importance weights.

    Returns:
        `[B]` relaxed bound (value and gradient).
    """
    return iwae_bound(log_weights)


def check_estimator(name: str) -> str:
    """Returns `name` if it is one of `ESTIMATORS`, else raises ValueError."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {name!r}")
    return name
