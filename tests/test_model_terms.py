"""The model's terms against a float64 NumPy reference.

The log-weights log p(x|z, m_a) + log p(z|m_a) + log p(a) - log q(z|x, m_a)
- log q(a|x), kl_a = sum_a q log(q/p), the analytic kl_z and recon are rebuilt
from the networks' outputs (embeddings, Gaussian parameters, logits) with
NumPy densities, at fixed addresses and the model's own z noise. A dropped or
doubled term of the log-weight fails here (every other test compares the
model with itself).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf.configs import ModelConfig
from vma_tf.modeling import sampling
from vma_tf.modeling.builders import build_mlp_model

K, B, M, D, Z = 3, 4, 5, 6, 2


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


def _build(kind, memory="episodic"):
    config = ModelConfig(
        kind=kind,
        memory=memory,
        memory_size=M,
        memory_dim=3,
        hidden_units=(7,),
        latent_dim=Z,
        embed_dim=3,
        num_samples=K,
    )
    keras.utils.set_random_seed(0)
    model = build_mlp_model(config, (D,), seed=0)
    rng = np.random.default_rng(1)
    x = tf.constant((rng.uniform(size=(B, D)) > 0.5).astype(np.float64))
    mem = None
    if kind == "vma" and memory == "episodic":
        mem = tf.constant((rng.uniform(size=(M, D)) > 0.5).astype(np.float64))
    model.compute_terms(x, mem, K, seed=(0, 0))
    for v in model.trainable_variables:  # Non-trivial weights everywhere.
        v.assign(v + rng.normal(scale=0.5, size=v.shape))
    return model, x, mem, rng


@pytest.mark.parametrize("memory", ["episodic", "learned"])
def test_vma_terms_match_numpy_reference(float64, memory):
    model, x, mem, rng = _build("vma", memory)
    addresses = tf.constant(rng.integers(0, M, size=(K, B)), tf.int32)
    seed = tf.constant([3, 4])
    terms = model.compute_terms(x, mem, K, seed, addresses=addresses)

    m = model.memory(mem)
    e = model.addressing.embed_memory(m).numpy()
    e_q = model.addressing.query_embedder(x).numpy()
    e_p = model.addressing.prior_query.numpy()
    norm = np.linalg.norm(e, axis=-1)
    log_q_all = _log_softmax(e_q @ e.T / norm)  # [B, M]
    log_p_all = _log_softmax(e @ e_p / norm)  # [M]
    a = addresses.numpy()
    log_q_a = log_q_all[np.arange(B)[None], a]
    log_p_a = log_p_all[a]
    gather = lambda t: tf.nest.map_structure(lambda u: tf.gather(u, addresses), t)
    entry = model.entry_features(m)
    lq, sq = _gauss(model.encoder(x, gather(entry["encoder"])))
    lp, sp = _gauss(gather(entry["prior_z"]))
    _, seed_z = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    eps = sampling.standard_normal([K, B, Z], seed_z, tf.float64).numpy()
    z = lq + sq * eps
    logits = model.decoder(tf.constant(z), gather(entry["decoder"])).numpy()
    xn = x.numpy()[None]
    log_px = np.sum(xn * logits - _softplus(logits), -1)
    log_w = (
        log_px
        + _log_normal(z, lp, sp)
        + log_p_a
        - _log_normal(z, lq, sq)
        - log_q_a
    )
    q = np.exp(log_q_all)
    np.testing.assert_allclose(terms.log_weights.numpy(), log_w, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(terms.log_q_a.numpy(), log_q_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        terms.kl_a.numpy(), np.sum(q * (log_q_all - log_p_all), -1), rtol=1e-9
    )
    np.testing.assert_allclose(
        terms.kl_z.numpy(), _kl_normal(lq, sq, lp, sp).mean(0), rtol=1e-9
    )
    np.testing.assert_allclose(terms.recon.numpy(), -log_px.mean(0), rtol=1e-10)


def test_vae_terms_match_numpy_reference(float64):
    model, x, _, _ = _build("vae")
    seed = tf.constant([5, 6])
    terms = model.compute_terms(x, None, K, seed)
    lq, sq = _gauss(model.encoder(x))
    eps = sampling.standard_normal([K, B, Z], seed, tf.float64).numpy()
    z = lq + sq * eps
    logits = model.decoder(tf.constant(z)).numpy()
    log_px = np.sum(x.numpy()[None] * logits - _softplus(logits), -1)
    log_w = log_px + _log_normal(z, 0.0, 1.0) - _log_normal(z, lq, sq)
    np.testing.assert_allclose(terms.log_weights.numpy(), log_w, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(
        terms.kl_z.numpy(), _kl_normal(lq, sq, 0.0, 1.0), rtol=1e-9
    )
    np.testing.assert_allclose(terms.recon.numpy(), -log_px.mean(0), rtol=1e-10)
    np.testing.assert_array_equal(terms.kl_a.numpy(), np.zeros(B))
