"""Exact tests of the K-sample bound and the address gradient estimators.

Unbiased estimators (VIMCO in both forms, NVIL) are checked by exact
enumeration of all address tuples; reweighted wake-sleep and the Gumbel
relaxation by their own defining properties.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import estimators
from vma_tf.configs import ModelConfig
from vma_tf.modeling.builders import build_mlp_model

tfd = tfp.distributions


# -- float64 NumPy references --------------------------------------------------


def np_log_mean_exp(x, axis=0):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(
        np.log(np.mean(np.exp(x - m), axis=axis, keepdims=True)) + m, axis
    )


def np_learning_signals(log_w, baseline):
    """L - L_{-k} for every k, by explicit loops in float64."""
    k_total, batch = log_w.shape
    bound = np_log_mean_exp(log_w)
    out = np.zeros_like(log_w)
    for k in range(k_total):
        others = np.delete(log_w, k, axis=0)
        if baseline == "arithmetic":
            loo = np_log_mean_exp(others)
        else:  # geometric: w_k replaced by the geometric mean of the others.
            geo = others.mean(axis=0, keepdims=True)
            loo = np_log_mean_exp(np.concatenate([others, geo], axis=0))
        out[k] = bound - loo
    return out


@pytest.fixture
def float64():
    # Both: once any layer has been built, the global dtype policy is cached
    # and set_floatx alone no longer changes new layers' dtype.
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(old_floatx)
    keras.config.set_dtype_policy(old_policy)


@pytest.mark.parametrize("baseline", ["arithmetic", "geometric"])
def test_learning_signals_match_numpy_reference(baseline):
    rng = np.random.default_rng(0)
    log_w = rng.normal(scale=30.0, size=(5, 7))  # Wide range: stability.
    got = estimators.learning_signals(tf.constant(log_w), baseline).numpy()
    np.testing.assert_allclose(
        got, np_learning_signals(log_w, baseline), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize(
    "baseline,tfp_fn",
    [
        ("arithmetic", tfp.stats.log_loomean_exp),
        ("geometric", tfp.stats.log_soomean_exp),
    ],
)
def test_leave_one_out_matches_tfp_stats_and_is_more_accurate(baseline, tfp_fn):
    """Same quantity as tfp.stats where that is accurate; exact where it is not."""
    rng = np.random.default_rng(4)
    narrow = rng.normal(scale=1.0, size=(4, 50))
    ours = estimators.leave_one_out_bounds(tf.constant(narrow), baseline)[1]
    np.testing.assert_allclose(
        ours.numpy(), tfp_fn(narrow, axis=0)[0].numpy(), rtol=1e-12
    )
    # Realistic float32 spread (log-weights differing by tens of nats).
    wide = rng.normal(scale=5.0, size=(4, 5000))
    ref = np_learning_signals(wide, baseline)
    f32 = tf.constant(wide, tf.float32)
    ours_err = np.abs(estimators.learning_signals(f32, baseline).numpy() - ref)
    bound, loo = tfp_fn(f32, axis=0)
    tfp_err = np.abs((bound[tf.newaxis] - loo).numpy() - ref)
    assert ours_err.max() < 1e-4
    assert tfp_err.max() > 100 * ours_err.max()


def test_bound_value_is_log_mean_exp():
    rng = np.random.default_rng(1)
    log_w = rng.normal(scale=10.0, size=(4, 3))
    log_q = rng.normal(size=(4, 3))
    want = np_log_mean_exp(log_w)
    for baseline in estimators.BASELINES:
        got = estimators.vimco_objective(
            tf.constant(log_w), tf.constant(log_q), baseline
        ).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(estimators.iwae_bound(log_w).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("baseline", ["arithmetic", "geometric"])
def test_address_coefficient_is_paper_omega(baseline):
    """d surrogate / d log q(a_k) = (L - L_{-k}) - w~_k when log w has -log q."""
    rng = np.random.default_rng(2)
    rest = tf.constant(rng.normal(scale=3.0, size=(4, 5)))
    log_q = tf.constant(rng.normal(size=(4, 5)))
    with tf.GradientTape() as tape:
        tape.watch(log_q)
        obj = tf.reduce_sum(estimators.vimco_objective(rest - log_q, log_q, baseline))
    grad = tape.gradient(obj, log_q).numpy()
    log_w = (rest - log_q).numpy()
    w = np.exp(log_w - log_w.max(0))
    w /= w.sum(0)
    want = np_learning_signals(log_w, baseline) - w
    np.testing.assert_allclose(grad, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        estimators.address_gradient_coefficients(rest - log_q, baseline).numpy(),
        want,
        rtol=1e-10,
        atol=1e-12,
    )


def test_fewer_than_two_samples_is_an_error():
    with pytest.raises(ValueError, match="K"):
        estimators.vimco_objective(tf.zeros([1, 3]), tf.zeros([1, 3]))
    with pytest.raises(ValueError, match="baseline"):
        estimators.vimco_objective(tf.zeros([3, 3]), tf.zeros([3, 3]), "median")


def _build_tiny_vma(memory, estimator, memory_size, hidden, batch, dtype):
    """A tiny MLP VMA on 5-pixel images, its targets `[batch, 5]` and (for
    episodic memory) a memory `[memory_size, 5]`, variables created."""
    config = ModelConfig(
        kind="vma",
        memory=memory,
        memory_size=memory_size,
        memory_dim=memory_size + 1,
        hidden_units=(hidden,),
        latent_dim=2,
        embed_dim=3,
        num_samples=3,
        estimator=estimator,
    )
    keras.utils.set_random_seed(0)
    model = build_mlp_model(config, (5,), seed=0)
    rng = np.random.default_rng(3)
    x = tf.constant((rng.uniform(size=(batch, 5)) > 0.5).astype(dtype))
    mem = None
    if memory == "episodic":
        mem = tf.constant((rng.uniform(size=(memory_size, 5)) > 0.5).astype(dtype))
    model.compute_terms(x, mem, 3, seed=(0, 0))  # Create variables.
    return model, x, mem, rng


def _tiny_vma(memory, estimator="vimco"):
    model, x, mem, rng = _build_tiny_vma(memory, estimator, 3, 6, 2, np.float64)
    # Make the addressing non-trivial so every tuple has distinct weight.
    for v in model.trainable_variables:
        v.assign(v + tf.constant(rng.normal(scale=0.5, size=v.shape), v.dtype))
    return model, x, mem


def _enumerated_gradients(model, x, mem, baseline, objective):
    """Exact E_a[grad] over all |M|^K address tuples, noise eps held fixed.

    `objective(terms)` returns the `[B]` per-example quantity whose gradient
    is averaged; tuple probabilities prod_k q(a_k|x) are stop-gradiented, so
    the result is the expectation of the estimator, not its gradient.
    """
    batch = x.shape[0]
    variables = model.trainable_variables
    seed = tf.constant([11, 12], tf.int32)
    with tf.GradientTape(persistent=True) as tape:
        expected_estimator = tf.constant(0.0, tf.float64)
        exact_objective = tf.constant(0.0, tf.float64)
        for tup in itertools.product(range(3), repeat=3):
            a = tf.constant([[t] * batch for t in tup], tf.int32)  # [K, B]
            terms = model.compute_terms(x, mem, 3, seed=seed, addresses=a)
            prob = tf.exp(tf.reduce_sum(terms.log_q_a, axis=0))  # [B]
            expected_estimator += tf.reduce_sum(
                tf.stop_gradient(prob) * objective(terms, baseline)
            )
            exact_objective += tf.reduce_sum(
                prob * estimators.iwae_bound(terms.log_weights)
            )
    est = tape.gradient(expected_estimator, variables)
    exact = tape.gradient(exact_objective, variables)
    # None: not connected (e.g. NVIL's b(x) is not in L_K).
    as_array = lambda g, v: np.zeros(v.shape) if g is None else g.numpy()
    return (
        [as_array(e, v) for e, v in zip(est, variables)],
        [as_array(g, v) for g, v in zip(exact, variables)],
        [v.path for v in variables],
    )


def _vimco(terms, baseline):
    return estimators.vimco_objective(terms.log_weights, terms.log_q_a, baseline)


@pytest.mark.parametrize("memory", ["learned", "episodic"])
@pytest.mark.parametrize("baseline", ["arithmetic", "geometric"])
def test_vimco_is_unbiased_by_exact_enumeration(float64, memory, baseline):
    """E_a[VIMCO gradient] == grad E_a[L_K], |M| = 3, K = 3: all 27 tuples."""
    model, x, mem = _tiny_vma(memory)
    est, exact, names = _enumerated_gradients(model, x, mem, baseline, _vimco)
    checked = 0
    for e, g, name in zip(est, exact, names):
        np.testing.assert_allclose(e, g, rtol=1e-5, atol=1e-8, err_msg=name)
        checked += int(np.any(np.abs(g) > 1e-6))
    assert checked >= len(names) - 1  # Nearly every variable has a gradient.


def _model_objective(model, x, estimator):
    return lambda terms, _: model.objective(terms, x, estimator)


@pytest.mark.parametrize(
    "memory,estimator",
    [
        ("learned", "vimco"),
        ("learned", "vimco_geometric"),
        ("learned", "nvil"),
        ("episodic", "nvil"),
    ],
)
def test_model_estimators_are_unbiased_by_exact_enumeration(float64, memory, estimator):
    """The model's `objective` by estimator name: E_a[grad] == grad E_a[L_K].

    NVIL with a random (trained-looking) baseline network b(x) and running
    mean c = 1.7: any b(x) and c leave the estimator unbiased. The running
    variance normalisation is frozen at scale 1 here (v = 1): it divides only
    the score term, a positive per-step scale (see the next test).
    """
    model, x, mem = _tiny_vma(memory, estimator)
    if estimator == "nvil":
        model.nvil_baseline.centre.assign(1.7)
        model.nvil_baseline.variance.assign(1.0)
        # b(x) really varies with x (its weights were randomised).
        b = model.nvil_baseline(x).numpy()
        assert abs(b[0] - b[1]) > 1e-3
    objective = _model_objective(model, x, estimator)
    est, exact, names = _enumerated_gradients(model, x, mem, None, objective)
    checked = 0
    for e, g, name in zip(est, exact, names):
        if "nvil_baseline" in name:
            continue  # Its own regression gradient; no part of E[L_K].
        np.testing.assert_allclose(e, g, rtol=1e-5, atol=1e-8, err_msg=name)
        checked += int(np.any(np.abs(g) > 1e-6))
    assert checked >= 10


def test_nvil_as_trained_is_unbiased_by_exact_enumeration(float64):
    """`training_objective`, as a training step composes it (the surrogate,
    then NVIL's running statistics moved towards the batch), with c = 1.7
    and v = 1 before each address tuple, one target (the statistics depend
    on this one example's addresses): E_a[grad] == grad E_a[L_K]. Moving c
    before forming the signal scales the score term by 1 - (1 - 0.8) / 1."""
    model, x, mem = _tiny_vma("learned", "nvil")
    x = x[:1]
    nvil = model.nvil_baseline

    def as_trained(terms, _):
        nvil.centre.assign(1.7)
        nvil.variance.assign(1.0)
        return model.training_objective(terms, x, "nvil")

    est, exact, names = _enumerated_gradients(model, x, mem, None, as_trained)
    assert nvil.centre.numpy() != 1.7  # The statistics did move.
    checked = 0
    for e, g, name in zip(est, exact, names):
        if "nvil_baseline" not in name:
            np.testing.assert_allclose(e, g, rtol=1e-5, atol=1e-8, err_msg=name)
            checked += int(np.any(np.abs(g) > 1e-6))
    assert checked >= 10


def test_nvil_variance_normalisation_rescales_only_the_score_term(float64):
    """With scale s = 2 the enumeration shows the (documented) deviation on
    the addressing parameters; the model's other parameters stay exact."""
    model, x, mem = _tiny_vma("learned", "nvil")
    model.nvil_baseline.variance.assign(4.0)  # scale = max(1, sqrt(4)) = 2.
    objective = _model_objective(model, x, "nvil")
    est, exact, names = _enumerated_gradients(model, x, mem, None, objective)
    embedder = [i for i, n in enumerate(names) if "query_embedder" in n]
    assert embedder
    assert any(
        not np.allclose(est[i], exact[i], rtol=1e-3, atol=1e-6) for i in embedder
    )
    decoder = [i for i, n in enumerate(names) if "/decoder/" in n]
    for i in decoder:
        np.testing.assert_allclose(est[i], exact[i], rtol=1e-5, atol=1e-8)


def test_nvil_objective_gradients_are_the_signal_and_the_regression():
    """`nvil_objective` in float64: value L_K; d/d log q(a_k|x) = the signal
    (L_K - c - b) / s for every k; d/d b(x) = L_K - c - b (the gradient of
    -(L_K - c - b)^2 / 2, which fits b(x) to L_K - c); d/d log w = the IWAE
    weights (the bound's own gradient)."""
    rng = np.random.default_rng(3)
    log_w = tf.constant(rng.normal(scale=3.0, size=(4, 5)))
    log_q_a = tf.constant(rng.normal(size=(4, 5)))
    b = tf.constant(rng.normal(size=5))
    centre, scale = 0.75, 2.5  # Exact in float32 too (a Python float is cast).
    with tf.GradientTape() as tape:
        tape.watch([log_w, log_q_a, b])
        objective = estimators.nvil_objective(log_w, log_q_a, b, centre, scale)
    d_w, d_q, d_b = tape.gradient(objective, [log_w, log_q_a, b])
    w = log_w.numpy()
    bound = np.log(np.exp(w).mean(0))
    residual = bound - centre - b.numpy()
    np.testing.assert_allclose(objective.numpy(), bound, rtol=1e-12)
    np.testing.assert_allclose(d_b.numpy(), residual, rtol=1e-12)
    np.testing.assert_allclose(
        d_q.numpy(), np.broadcast_to(residual / scale, (4, 5)), rtol=1e-12
    )
    np.testing.assert_allclose(d_w.numpy(), np.exp(w) / np.exp(w).sum(0), rtol=1e-12)


def test_nvil_baseline_network_regresses_on_the_residual(float64):
    """Through the model: the gradient of the NVIL objective on b(x)'s own
    weights is sum_b (L_K - c - b(x_b)) grad b(x_b), computed here from the
    step's log-weights and a tape on b(x) alone (a flipped sign, or b(x)
    cut from its gradient, would train it away from L_K - c)."""
    model, x, mem = _tiny_vma("learned", "nvil")
    x = tf.concat([x, 1.0 - x], 0)
    nvil = model.nvil_baseline
    nvil.centre.assign(0.4)
    weights = nvil.trainable_variables
    assert weights
    terms = model.compute_terms(x, mem, 3, seed=tf.constant([2, 7]))
    with tf.GradientTape() as tape:
        objective = model.objective(terms, x, "nvil")
    got = tape.gradient(objective, weights)
    log_w = terms.log_weights.numpy()
    bound = np.log(np.exp(log_w).mean(0))
    with tf.GradientTape() as tape:
        b = nvil(x)
    residual = tf.constant(bound - 0.4 - b.numpy())
    assert np.abs(residual.numpy()).min() > 1e-3
    want = tape.gradient(b, weights, output_gradients=residual)
    for g, w, v in zip(got, want, weights):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10, err_msg=v.path)


def test_nvil_running_statistics_update_values(float64):
    """One training-mode `loss_and_terms` moves c and v to
    0.8 * old + 0.2 * the batch mean / (population) variance of L_K - b(x),
    computed here in NumPy from the step's log-weights; evaluation does not
    move them."""
    model, x, mem = _tiny_vma("learned", "nvil")
    x = tf.concat([x, 1.0 - x, x[:1]], 0)  # 5 targets: a non-zero variance.
    nvil = model.nvil_baseline
    nvil.centre.assign(1.5)
    nvil.variance.assign(3.0)
    seed = tf.constant([5, 9])
    _, terms = model.loss_and_terms(x, mem, seed)
    log_w = terms.log_weights.numpy()
    top = log_w.max(0)
    bound = top + np.log(np.exp(log_w - top).mean(0))
    residual = bound - nvil(x).numpy()
    assert residual.var() > 1e-3
    np.testing.assert_allclose(
        nvil.centre.numpy(), 0.8 * 1.5 + 0.2 * residual.mean(), rtol=1e-10
    )
    np.testing.assert_allclose(
        nvil.variance.numpy(), 0.8 * 3.0 + 0.2 * residual.var(), rtol=1e-10
    )
    moved = (nvil.centre.numpy(), nvil.variance.numpy())
    model.loss_and_terms(x, mem, seed, training=False)
    model.loss_and_terms(x, mem, seed, update_statistics=False)
    assert (nvil.centre.numpy(), nvil.variance.numpy()) == moved


def test_model_vimco_is_the_arithmetic_leave_one_out(float64):
    """The default estimator by name, through the model: the surrogate of
    `vimco_objective(..., "arithmetic")` (the paper's), with its gradients,
    and not the geometric one's or the bound's (no score term)."""
    model, x, mem = _tiny_vma("learned")
    variables = model.trainable_variables
    grads = {}
    for name in ("model", "arithmetic", "geometric", "bound"):
        with tf.GradientTape() as tape:
            terms = model.compute_terms(x, mem, 3, seed=(4, 2))
            if name == "model":
                value = model.objective(terms, x, "vimco")
            elif name == "bound":
                value = estimators.iwae_bound(terms.log_weights)
            else:
                value = _vimco(terms, name)
        grads[name] = [g.numpy() for g in tape.gradient(value, variables)]
        if name == "model":
            surrogate = value.numpy()
        elif name == "arithmetic":
            np.testing.assert_allclose(surrogate, value.numpy(), rtol=1e-12)
    for g, h in zip(grads["model"], grads["arithmetic"]):
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-14)
    for other in ("geometric", "bound"):
        assert any(
            not np.allclose(g, h) for g, h in zip(grads["model"], grads[other])
        ), other


def test_nvil_statistics_ignore_a_non_finite_batch(float64):
    """A step with a NaN log-weight (one `--skip_nonfinite` skips) leaves c
    and v as they were: once NaN they would make every later loss NaN. The
    next finite step moves them and gives a finite loss."""
    model, x, mem = _tiny_vma("learned", "nvil")
    nvil = model.nvil_baseline
    nvil.centre.assign(1.5)
    nvil.variance.assign(3.0)
    seed = tf.constant([5, 9])
    _, terms = model.loss_and_terms(x, mem, seed, update_statistics=False)
    poisoned = terms._replace(
        log_weights=tf.tensor_scatter_nd_update(
            terms.log_weights, [[0, 0]], tf.constant([np.nan], terms.log_weights.dtype)
        ),
    )
    model.training_objective(poisoned, x)
    assert (nvil.centre.numpy(), nvil.variance.numpy()) == (1.5, 3.0)
    loss, _ = model.loss_and_terms(x, mem, seed)
    assert np.isfinite(loss.numpy()) and nvil.centre.numpy() != 1.5


def test_enumeration_detects_a_biased_estimator(float64):
    """The same check fails for the pathwise-only gradient (no score term)."""
    model, x, mem = _tiny_vma("learned")
    pathwise = lambda terms, _: estimators.iwae_bound(terms.log_weights)
    est, exact, names = _enumerated_gradients(model, x, mem, "arithmetic", pathwise)
    addressing = [i for i, n in enumerate(names) if "embedder" in n]
    assert addressing
    assert any(
        not np.allclose(est[i], exact[i], rtol=1e-3, atol=1e-6) for i in addressing
    )


def test_agrees_with_tfp_vi_vimco(float64):
    """Same samples => same value and gradient as tfp.vi's VIMCO (geometric)."""
    logits = tf.Variable([0.3, -0.2, 0.5, 0.1], dtype=tf.float64)
    target = tf.constant([-1.0, -3.0, -0.5, -2.0], tf.float64)
    target_log_prob = lambda a: tf.gather(target, a) * tf.reduce_sum(logits**2)
    seed = tf.constant([5, 6], tf.int32)
    k = 5
    with tf.GradientTape(persistent=True) as tape:
        q = tfd.Categorical(logits=logits)
        tfp_loss = tfp.vi.monte_carlo_variational_loss(
            target_log_prob,
            q,
            sample_size=1,
            importance_sample_size=k,
            discrepancy_fn=tfp.vi.kl_reverse,
            gradient_estimator=tfp.vi.GradientEstimators.VIMCO,
            seed=seed,
        )
        # Reproduce tfp's draws: csiszar_vimco samples [K, 1] with the first
        # half of split_seed(seed, 2).
        sample_seed, _ = tfp.random.split_seed(seed, 2)
        a = tf.stop_gradient(q.sample([k, 1], seed=sample_seed))
        log_q = q.log_prob(a)
        ours = -tf.reduce_mean(
            estimators.vimco_objective(target_log_prob(a) - log_q, log_q, "geometric")
        )
    np.testing.assert_allclose(ours.numpy(), tfp_loss.numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        tape.gradient(ours, logits).numpy(),
        tape.gradient(tfp_loss, logits).numpy(),
        rtol=1e-10,
        atol=1e-12,
    )


def _grads(fn, variables):
    with tf.GradientTape() as tape:
        value = fn()
    grads = tape.gradient(value, variables)
    return [
        np.zeros(v.shape) if g is None else g.numpy() for g, v in zip(grads, variables)
    ]


def _normalized_weights_np(log_w):
    w = np.exp(log_w - log_w.max(0))
    return w / w.sum(0)


def test_rws_q_update_is_the_gradient_of_kl_from_normalized_weights(float64):
    """RWS: for q(a|x)'s own parameters (h^q) the update equals
    -grad KL(p~ || q(a|x)), p~(a) = sum_k w~_k [a_k = a] the address marginal of
    the normalised weights held fixed (closed form by tfd.kl_divergence); the
    model's parameters get the IWAE gradient of the reparameterised bound."""
    model, x, mem = _tiny_vma("episodic", "rws")
    seed = tf.constant([3, 4], tf.int32)
    variables = model.trainable_variables
    names = [v.path for v in variables]
    terms = model.compute_terms(x, mem, 3, seed=seed, stop_z_gradient=True)
    w = _normalized_weights_np(terms.log_weights.numpy())  # [K, B]
    a = terms.addresses.numpy()
    target = np.zeros((x.shape[0], 3))
    for k in range(3):
        for b in range(x.shape[0]):
            target[b, a[k, b]] += w[k, b]

    def rws():
        t = model.compute_terms(x, mem, 3, seed=seed, stop_z_gradient=True)
        return tf.reduce_sum(model.objective(t, x, "rws"))

    def kl():
        q_a, _ = model.address_distributions(x, mem)
        return -tf.reduce_sum(tfd.kl_divergence(tfd.Categorical(probs=target), q_a))

    def iwae():  # Reparameterised z: the decoder's gradient is the same.
        t = model.compute_terms(x, mem, 3, seed=seed)
        return tf.reduce_sum(estimators.iwae_bound(t.log_weights))

    got, want_q, want_model = (_grads(f, variables) for f in (rws, kl, iwae))
    query = [i for i, n in enumerate(names) if "query_embedder" in n]
    model_side = [
        i for i, n in enumerate(names) if n.startswith(("decoder/", "prior_z/"))
    ]
    assert query and model_side
    for i in query:
        assert np.abs(want_q[i]).max() > 1e-4
        np.testing.assert_allclose(got[i], want_q[i], rtol=1e-9, atol=1e-12)
    for i in model_side:
        np.testing.assert_allclose(got[i], want_model[i], rtol=1e-9, atol=1e-12)
    # Value: the K-sample bound.
    np.testing.assert_allclose(
        model.objective(terms, x, "rws").numpy(),
        estimators.iwae_bound(terms.log_weights).numpy(),
        rtol=1e-12,
    )


def test_rws_encoder_update_is_weighted_log_q_of_fixed_z(float64):
    """RWS's q(z|x, m_a) update: sum_k w~_k grad log q(z_k|x, m_a_k) at the
    drawn z held fixed, whose expectation under w~ pulls q(z) towards the
    weighted samples (against the autodiff gradient of that function; the
    terms' log q itself is checked against NumPy in test_model_terms.py)."""
    model, x, mem = _tiny_vma("learned", "rws")
    seed = tf.constant([8, 9], tf.int32)
    encoder = model.encoder.trainable_variables
    terms = model.compute_terms(x, mem, 3, seed=seed, stop_z_gradient=True)
    w = tf.constant(_normalized_weights_np(terms.log_weights.numpy()))
    # log q(z_k | x, a_k) at fixed z (the terms' log q minus log q(a_k|x)).
    log_q_z = lambda t: t.log_q - t.log_q_a

    def wake():
        t = model.compute_terms(x, mem, 3, seed=seed, stop_z_gradient=True)
        return tf.reduce_sum(w * log_q_z(t))

    def rws():
        t = model.compute_terms(x, mem, 3, seed=seed, stop_z_gradient=True)
        return tf.reduce_sum(model.objective(t, x, "rws"))

    got, want = _grads(rws, encoder), _grads(wake, encoder)
    for g, h in zip(got, want):
        np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-12)

    # The reparameterised (IWAE) gradient of the encoder differs.
    def iwae():
        t = model.compute_terms(x, mem, 3, seed=seed)
        return tf.reduce_sum(estimators.iwae_bound(t.log_weights))

    other = _grads(iwae, encoder)
    assert any(not np.allclose(g, h, rtol=1e-3) for g, h in zip(got, other))


def _relaxed_bound(model, x, mem, seed, straight_through=False):
    terms = model.compute_relaxed_terms(
        x, mem, 3, seed=seed, temperature=0.7, straight_through=straight_through
    )
    return tf.reduce_sum(estimators.gumbel_objective(terms.log_weights))


@pytest.mark.parametrize("memory", ["learned", "episodic"])
def test_gumbel_gradient_matches_finite_differences(float64, memory):
    """Fixed noise: the relaxed bound is a smooth function of the parameters
    and its autodiff gradient (the gumbel estimator) matches central finite
    differences along random directions, for all and for the addressing
    parameters alone."""
    model, x, mem = _tiny_vma(memory, "gumbel")
    seed = tf.constant([21, 22], tf.int32)
    variables = model.trainable_variables
    grads = _grads(lambda: _relaxed_bound(model, x, mem, seed), variables)
    rng = np.random.default_rng(7)
    addressing = [v.path.startswith("addressing/") for v in variables]
    assert any(np.abs(g).max() > 1e-4 for g, a in zip(grads, addressing) if a)
    for subset in (None, addressing):
        dirs = [
            rng.normal(size=v.shape) * (1.0 if subset is None or subset[i] else 0.0)
            for i, v in enumerate(variables)
        ]
        eps = 1e-6
        original = [v.numpy() for v in variables]
        values = []
        for sign in (1.0, -1.0):
            for v, o, d in zip(variables, original, dirs):
                v.assign(o + sign * eps * d)
            values.append(_relaxed_bound(model, x, mem, seed).numpy())
        for v, o in zip(variables, original):
            v.assign(o)
        fd = (values[0] - values[1]) / (2 * eps)
        analytic = sum(np.sum(g * d) for g, d in zip(grads, dirs))
        assert abs(analytic) > 1e-3
        np.testing.assert_allclose(analytic, fd, rtol=1e-6)


def test_gumbel_relaxed_address_and_straight_through_forward(float64):
    """argmax of the relaxed address is the discrete model's sample with the
    same seed; straight-through's forward pass is the hard one-hot, i.e.
    exactly the discrete model's log-weights; its gradient reaches q(a|x)."""
    model, x, mem = _tiny_vma("episodic", "gumbel")
    seed = tf.constant([5, 6], tf.int32)
    discrete = model.compute_terms(x, mem, 3, seed=seed)
    relaxed = model.compute_relaxed_terms(x, mem, 3, seed=seed, temperature=0.7)
    st = model.compute_relaxed_terms(
        x, mem, 3, seed=seed, temperature=0.7, straight_through=True
    )
    np.testing.assert_array_equal(relaxed.addresses, discrete.addresses)
    np.testing.assert_array_equal(st.addresses, discrete.addresses)
    np.testing.assert_allclose(
        st.log_weights.numpy(), discrete.log_weights.numpy(), rtol=1e-12
    )
    assert not np.allclose(relaxed.log_weights.numpy(), discrete.log_weights.numpy())
    query = [v for v in model.trainable_variables if "query_embedder" in v.path]
    grads = _grads(lambda: _relaxed_bound(model, x, mem, seed, True), query)
    assert all(np.abs(g).max() > 1e-6 for g in grads)


def _tiny_float32_vma(estimator, memory="episodic"):
    model, x, mem, _ = _build_tiny_vma(memory, estimator, 4, 8, 6, np.float32)
    return model, x, mem


@pytest.mark.parametrize(
    "estimator",
    [
        # VIMCO's compiled step is exercised by every training test already.
        pytest.param("vimco", marks=pytest.mark.slow),
        pytest.param("vimco_geometric", marks=pytest.mark.slow),
        pytest.param("nvil", marks=pytest.mark.slow),  # 37.9 s at 5a7716e.
        pytest.param("rws", marks=pytest.mark.slow),  # >= 30 s (BUILD.md "Tests").
        pytest.param("gumbel", marks=pytest.mark.slow),
    ],
)
def test_every_estimator_trains_under_xla(estimator, tmp_path):
    """A jit-compiled train_step per estimator; evaluation is the discrete
    L_K whatever the estimator; NVIL's running statistics move in training
    only and are checkpointed with the model."""
    from vma_tf import checkpointing

    model, x, mem = _tiny_float32_vma(estimator)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    data = {"x": x, "memory": mem}
    ds = tf.data.Dataset.from_tensors(data).repeat()
    history = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    model.reset_eval_seed()
    evaluated = model.evaluate(ds, steps=1, verbose=0, return_dict=True)
    model.reset_eval_seed()
    seed = model.eval_seed_generator.next()
    discrete = model.compute_terms(x, mem, 3, seed=seed)
    np.testing.assert_allclose(
        evaluated["nll_bound"],
        -np.mean(estimators.iwae_bound(discrete.log_weights).numpy()),
        rtol=1e-5,
    )
    paths = [v.path for v in model.variables]
    if estimator != "nvil":
        assert model.nvil_baseline is None
        assert not any("nvil" in p for p in paths)
        return
    nvil = model.nvil_baseline
    assert "nvil_baseline/centre" in paths and "nvil_baseline/variance" in paths
    centre = float(nvil.centre.numpy())
    assert centre != 0.0  # Moved by the three training steps.
    model.evaluate(ds, steps=2, verbose=0)
    assert float(nvil.centre.numpy()) == centre  # Not by evaluation.
    model.optimizer.build(model.trainable_variables)
    path = checkpointing.make_checkpoint(model).save(str(tmp_path / "ckpt"))
    fresh, _, _ = _tiny_float32_vma("nvil")
    fresh.compile(optimizer=keras.optimizers.Adam(1e-3))
    fresh.optimizer.build(fresh.trainable_variables)
    checkpointing.restore(checkpointing.make_checkpoint(fresh), path)
    assert float(fresh.nvil_baseline.centre.numpy()) == centre
    assert float(fresh.nvil_baseline.variance.numpy()) == float(nvil.variance.numpy())


def test_gradient_variance_is_seeded_and_per_estimator():
    from vma_tf import gradient_variance

    model, x, mem = _tiny_float32_vma("nvil")
    measure = lambda est, seed: gradient_variance.gradient_draws(
        model, x, mem, est, num_draws=4, seed=seed, jit=False
    )
    first, again = measure("vimco_geometric", 0), measure("vimco_geometric", 0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, measure("vimco_geometric", 1))
    n_params = sum(int(np.prod(v.shape)) for v in model.addressing.trainable_variables)
    assert first.shape == (4, n_params)
    centre = float(model.nvil_baseline.centre.numpy())
    summaries = {
        e: gradient_variance.summarize(measure(e, 0)) for e in ("nvil", "rws", "gumbel")
    }
    assert float(model.nvil_baseline.centre.numpy()) == centre  # Not updated.
    for s in summaries.values():
        assert s["total_variance"] > 0 and s["num_draws"] == 4
    want = first.var(axis=0, ddof=1).sum()
    got = gradient_variance.summarize(first)["total_variance"]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    plain, _, _ = _tiny_float32_vma("vimco")
    with pytest.raises(ValueError, match="NVILBaseline"):
        gradient_variance.gradient_draws(plain, x, mem, "nvil", 2, jit=False)


def test_relative_variance_is_not_capped_by_the_number_of_draws():
    """Gaussian draws with a known mean and covariance (P = 20 000, N = 50,
    |E g|^2 = 2, tr Cov = 50: ratio 25). The plug-in |mean|^2 is 2 + 50 / 50
    in expectation, so its ratio reads about 16.7 and never above N; the
    unbiased one reads 25 to a few percent, and a zero mean (not resolved
    from the noise) is inf."""
    from vma_tf import gradient_variance

    rng = np.random.default_rng(0)
    num_draws, size = 50, 20_000
    mean = np.full(size, np.sqrt(2.0 / size))
    noise = rng.normal(scale=np.sqrt(50.0 / size), size=(num_draws, size))
    s = gradient_variance.summarize(mean + noise)
    assert abs(s["total_variance"] - 50) < 1.5
    assert abs(s["relative_variance"] - 25) < 1.5, s
    assert abs(s["relative_variance_plugin"] - 50 / 3) < 0.6, s
    np.testing.assert_allclose(
        s["relative_variance_plugin"],
        1 / (1 / s["relative_variance"] + 1 / num_draws),
        rtol=1e-12,
    )
    centred = gradient_variance.summarize(noise - noise.mean(0))  # E g = 0.
    assert centred["relative_variance"] == float("inf")


def test_estimator_names_agree_everywhere():
    """One list of names: estimators, configs (no TF import) and the flags."""
    from absl import flags

    from launchers import train  # noqa: F401  (defines the flags)
    from vma_tf import configs

    assert configs.ESTIMATORS == estimators.ESTIMATORS
    assert set(estimators.UNBIASED_ESTIMATORS) < set(estimators.ESTIMATORS)
    assert tuple(flags.FLAGS["estimator"].parser.enum_values) == estimators.ESTIMATORS


def test_estimator_registry_keys_are_the_schema_list():
    """The registry has one entry per name of `configs.ESTIMATORS`, in order,
    and `estimators.ESTIMATORS` is that list (not a copy)."""
    from vma_tf.configs import schema
    from vma_tf.modeling import estimator_registry

    assert tuple(estimator_registry.REGISTRY) == schema.ESTIMATORS
    assert estimators.ESTIMATORS is schema.ESTIMATORS
    assert estimators.BASELINES is schema.BASELINES
    for name, spec in estimator_registry.REGISTRY.items():
        assert spec.name == name
    assert estimator_registry.canonical_name("vimco", "geometric") == (
        "vimco_geometric"
    )
    with pytest.raises(ValueError, match="estimator must be one of"):
        estimator_registry.lookup("reinforce")
