"""The model's terms against a float64 NumPy reference.

The log-weights log p(x|z, m_a) + log p(z|m_a) + log p(a) - log q(z|x, m_a)
- log q(a|x), kl_a = sum_a q log(q/p), the analytic kl_z and recon are rebuilt
from the networks' outputs (embeddings, Gaussian parameters, logits) with
NumPy densities, at fixed addresses and the model's own z noise: for the MLP
and the conv VMA (episodic and learned memory, the z part's nets run once per
entry or on the addressed entries), the VAE and soft attention (whose
attention read-out m(z) is rebuilt in NumPy), and the `gumbel` estimator's
relaxed model (mixed features, Concrete address densities). A dropped or doubled term of
the log-weight, a swapped KL or a wrong gather fails here (every other test
compares the model with itself).
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf import configs
from vma_tf.configs import ModelConfig
from vma_tf.modeling import sampling
from vma_tf.modeling.builders import build_model, build_mlp_model

K, B, M, D, Z = 3, 4, 5, 6, 2
IMAGE = (8, 8, 1)  # conv models: the smallest image the pyramid takes


@pytest.fixture
def float64():
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(old_floatx)
    keras.config.set_dtype_policy(old_policy)


def _softplus(v):
    return np.logaddexp(0.0, v)


def _gauss(params):
    loc, raw = np.split(np.asarray(params, np.float64), 2, axis=-1)
    return loc, _softplus(raw) + 1e-3


def _log_normal(z, loc, scale):
    return np.sum(
        -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), -1
    )


def _kl_normal(lq, sq, lp, sp):
    return np.sum(np.log(sp / sq) + (sq**2 + (lq - lp) ** 2) / (2 * sp**2) - 0.5, -1)


def _log_softmax(v):
    v = v - v.max(-1, keepdims=True)
    return v - np.log(np.exp(v).sum(-1, keepdims=True))


def _log_px(x, logits):
    """log Bernoulli(x; logits) summed over the event dims, `[K, B]`."""
    v = x[None] * logits - _softplus(logits)
    return v.reshape(v.shape[:2] + (-1,)).sum(-1)


def _normalized_scores(e, queries):
    """S(e_a, q) = <e_a, q> / ||e_a|| (paper eq. 5), `[..., |M|]`."""
    return queries @ e.T / np.linalg.norm(e, axis=-1)


def _build(kind, memory="episodic", arch="mlp", rows=M):
    """A tiny float64 model with non-trivial weights, targets and memory."""
    rng = np.random.default_rng(1)
    if arch == "mlp":
        config = ModelConfig(
            kind=kind,
            memory=memory,
            memory_size=rows,
            memory_dim=3,
            hidden_units=(7,),
            latent_dim=Z,
            embed_dim=3,
            num_samples=K,
        )
        x_shape = (D,)
        keras.utils.set_random_seed(0)
        model = build_mlp_model(config, x_shape, seed=0)
    else:
        preset = {"vma": "omniglot_fewshot", "soft_attention": "omniglot_fewshot_soft"}
        config = dataclasses.replace(
            configs.get_preset(preset[kind]).model,
            memory=memory,
            memory_size=rows,
            prior="learned",
            channels=4,
            hidden_units=(8,),
            latent_dim=Z,
            embed_dim=3,
            num_samples=K,
        )
        x_shape = IMAGE
        keras.utils.set_random_seed(0)
        model = build_model(config, x_shape, seed=0)
    x = tf.constant((rng.uniform(size=(B, *x_shape)) > 0.5).astype(np.float64))
    mem = None
    if kind != "vae" and memory == "episodic":
        mem = tf.constant((rng.uniform(size=(rows, *x_shape)) > 0.5).astype(np.float64))
    model.compute_terms(x, mem, K, seed=(0, 0))
    for v in model.trainable_variables:  # Non-trivial weights everywhere.
        v.assign(v + rng.normal(scale=0.5, size=v.shape))
    return model, x, mem, rng


@pytest.mark.parametrize(
    "arch,memory,entry_work",
    [
        ("mlp", "episodic", "per_entry"),
        ("mlp", "learned", "per_entry"),
        ("mlp", "episodic", "per_sample"),
        ("conv", "episodic", "per_entry"),
        ("conv", "learned", "per_sample"),
    ],
)
def test_vma_terms_match_numpy_reference(float64, arch, memory, entry_work):
    model, x, mem, rng = _build("vma", memory, arch)
    model.entry_work = entry_work
    # K != B and rows repeated across targets: a transposed or mis-batched
    # gather of the addressed entries changes the result.
    addresses = tf.constant(rng.integers(0, M, size=(K, B)), tf.int32)
    seed = tf.constant([3, 4])
    terms = model.compute_terms(x, mem, K, seed, addresses=addresses)

    m = model.memory(mem)
    e = model.addressing.embed_memory(m).numpy()
    e_q = model.addressing.query_embedder(x).numpy()
    e_p = model.addressing.prior_query.numpy()
    log_q_all = _log_softmax(_normalized_scores(e, e_q))  # [B, M]
    log_p_all = _log_softmax(_normalized_scores(e, e_p))  # [M]
    a = addresses.numpy()
    log_q_a = log_q_all[np.arange(B)[None], a]
    log_p_a = log_p_all[a]
    # The z part's per-entry features of every entry, gathered here in NumPy.
    entry = tf.nest.map_structure(lambda u: u.numpy(), model.entry_features(m))
    gather = lambda t: tf.nest.map_structure(lambda u: tf.constant(u[a]), t)
    lq, sq = _gauss(model.encoder(x, gather(entry["encoder"])))
    lp, sp = _gauss(entry["prior_z"][a])
    _, seed_z = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    eps = sampling.standard_normal([K, B, Z], seed_z, tf.float64).numpy()
    z = lq + sq * eps
    logits = model.decoder(tf.constant(z), gather(entry["decoder"])).numpy()
    log_px = _log_px(x.numpy(), logits)
    log_w = log_px + _log_normal(z, lp, sp) + log_p_a - _log_normal(z, lq, sq) - log_q_a
    q = np.exp(log_q_all)
    # Non-flat p(a) and q(a|x): a dropped or misplaced address term shows.
    assert np.ptp(log_p_all) > 1e-3 and np.all(np.ptp(log_q_all, -1) > 1e-3)
    np.testing.assert_allclose(terms.log_weights.numpy(), log_w, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(terms.log_q_a.numpy(), log_q_a, rtol=1e-10, atol=1e-12)
    # log q(a_k, z_k | x), what reweighted wake-sleep trains q on.
    np.testing.assert_allclose(
        terms.log_q.numpy(), log_q_a + _log_normal(z, lq, sq), rtol=1e-10, atol=1e-9
    )
    np.testing.assert_allclose(
        terms.kl_a.numpy(), np.sum(q * (log_q_all - log_p_all), -1), rtol=1e-9
    )
    np.testing.assert_allclose(
        terms.kl_z.numpy(), _kl_normal(lq, sq, lp, sp).mean(0), rtol=1e-9
    )
    np.testing.assert_allclose(terms.recon.numpy(), -log_px.mean(0), rtol=1e-10)


def _log_exp_concrete(log_y, log_probs, temperature):
    """log density of log y under ExpConcrete(probs, temperature) (Maddison
    et al. 2017): log (n-1)! + (n-1) log t + sum_i (l_i - t x_i)
    - n logsumexp_i (l_i - t x_i), x = log y, over the last axis."""
    n = log_y.shape[-1]
    v = log_probs - temperature * log_y
    top = v.max(-1, keepdims=True)
    lse = (top + np.log(np.exp(v - top).sum(-1, keepdims=True)))[..., 0]
    return (
        np.sum(np.log(np.arange(1, n)))
        + (n - 1) * np.log(temperature)
        + v.sum(-1)
        - n * lse
    )


def test_relaxed_vma_terms_match_numpy_reference(float64):
    """The `gumbel` estimator's relaxed model: y = softmax((logits + G) / t)
    with G from the model's uniform noise, every per-entry feature mixed as
    sum_a y_a f(m_a), the address term log p_t(y) - log q_t(y) with the
    Concrete densities of p(a) and q(a|x) (swapped, or one of them dropped,
    fails here); hard addresses argmax y; kl_a the discrete KL."""
    model, x, mem, _ = _build("vma", "episodic", "mlp")
    t = 0.7
    seed = tf.constant([9, 2])
    terms = model.compute_relaxed_terms(
        x, mem, K, seed, temperature=t, straight_through=False
    )
    m = model.memory(mem)
    e = model.addressing.embed_memory(m).numpy()
    log_q_all = _log_softmax(
        _normalized_scores(e, model.addressing.query_embedder(x).numpy())
    )
    log_p_all = _log_softmax(
        _normalized_scores(e, model.addressing.prior_query.numpy())
    )
    assert np.ptp(log_p_all) > 1e-3  # p(a) is not flat: a swap shows.
    seed_a, seed_z = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    u = sampling.uniform([K, B, M], seed_a, tf.float64).numpy()
    log_y = _log_softmax((log_q_all[None] - np.log(-np.log(u))) / t)  # [K, B, M]
    y = np.exp(log_y)
    entry = tf.nest.map_structure(lambda u: u.numpy(), model.entry_features(m))
    mix = lambda f: tf.nest.map_structure(
        lambda u: tf.constant(np.tensordot(y, u, axes=[[2], [0]])), f
    )
    lq, sq = _gauss(model.encoder(x, mix(entry["encoder"])))
    lp, sp = _gauss(np.tensordot(y, entry["prior_z"], axes=[[2], [0]]))
    eps = sampling.standard_normal([K, B, Z], seed_z, tf.float64).numpy()
    z = lq + sq * eps
    logits = model.decoder(tf.constant(z), mix(entry["decoder"])).numpy()
    log_px = _log_px(x.numpy(), logits)
    address = _log_exp_concrete(log_y, log_p_all, t) - _log_exp_concrete(
        log_y, log_q_all[None], t
    )
    log_w = log_px + _log_normal(z, lp, sp) - _log_normal(z, lq, sq) + address
    np.testing.assert_allclose(terms.log_weights.numpy(), log_w, rtol=1e-9, atol=1e-8)
    np.testing.assert_array_equal(terms.addresses.numpy(), log_y.argmax(-1))
    q = np.exp(log_q_all)
    np.testing.assert_allclose(
        terms.kl_a.numpy(), np.sum(q * (log_q_all - log_p_all), -1), rtol=1e-9
    )
    np.testing.assert_allclose(terms.recon.numpy(), -log_px.mean(0), rtol=1e-10)


def _assert_standard_prior_terms(terms, x, z, lq, sq, logits):
    """Terms of a model with z ~ q(z|x), p(z) = N(0, I) and no address."""
    log_px = _log_px(x.numpy(), logits)
    log_w = log_px + _log_normal(z, 0.0, 1.0) - _log_normal(z, lq, sq)
    np.testing.assert_allclose(terms.log_weights.numpy(), log_w, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(
        terms.kl_z.numpy(), _kl_normal(lq, sq, 0.0, 1.0), rtol=1e-9
    )
    np.testing.assert_allclose(terms.recon.numpy(), -log_px.mean(0), rtol=1e-10)
    np.testing.assert_array_equal(terms.kl_a.numpy(), np.zeros(B))


def test_vae_terms_match_numpy_reference(float64):
    model, x, _, _ = _build("vae")
    seed = tf.constant([5, 6])
    terms = model.compute_terms(x, None, K, seed)
    lq, sq = _gauss(model.encoder(x))
    eps = sampling.standard_normal([K, B, Z], seed, tf.float64).numpy()
    z = lq + sq * eps
    logits = model.decoder(tf.constant(z)).numpy()
    _assert_standard_prior_terms(terms, x, z, lq, sq, logits)


def test_soft_attention_terms_match_numpy_reference(float64):
    """Soft attention: z ~ q(z|x), w(z) = softmax_a S(h(m_a), g(z)) over the
    memory, m(z) = sum_a w_a m_a into the decoder, p(z) = N(0, I)."""
    model, x, mem, _ = _build("soft_attention", "episodic", "conv")
    seed = tf.constant([7, 8])
    terms = model.compute_terms(x, mem, K, seed)
    lq, sq = _gauss(model.encoder(x))
    eps = sampling.standard_normal([K, B, Z], seed, tf.float64).numpy()
    z = lq + sq * eps
    e = model.memory_embedder(mem).numpy()
    scores = _normalized_scores(e, model.query_net(tf.constant(z)).numpy())
    w = np.exp(_log_softmax(scores))  # [K, B, M]
    m = mem.numpy()
    m_z = (w @ m.reshape(M, -1)).reshape((K, B, *m.shape[1:]))
    logits = model._decode(tf.constant(z), tf.constant(m_z)).numpy()
    _assert_standard_prior_terms(terms, x, z, lq, sq, logits)
