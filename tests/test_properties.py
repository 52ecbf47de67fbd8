"""Property-based tests (hypothesis): the similarity, the estimator and the
episode sampler hold their invariants for random sizes and extreme values
(zero embeddings, |M| = 1, log-weights spread over thousands of nats)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vma_tf import estimators
from vma_tf.data import omniglot
from vma_tf.modeling.similarity import NormalizedSimilarity

tfd = tfp.distributions
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)

# Finite float32 values from tiny to huge, with exact zeros common.
embedding_values = st.one_of(
    st.just(np.float32(0.0)),
    st.floats(-1e3, 1e3, allow_nan=False).map(np.float32),
    st.floats(-1e-20, 1e-20, allow_nan=False).map(np.float32),
)


@st.composite
def embeddings(draw):
    m = draw(st.integers(1, 6))
    e = draw(st.integers(1, 5))
    b = draw(st.integers(1, 4))
    memory = draw(hnp.arrays(np.float32, (m, e), elements=embedding_values))
    if draw(st.booleans()):
        memory[draw(st.integers(0, m - 1))] = 0.0  # An all-zero entry.
    queries = draw(hnp.arrays(np.float32, (b, e), elements=embedding_values))
    return memory, queries


@SETTINGS
@given(embeddings(), st.sampled_from(["normalized", "dot", "cosine"]))
def test_similarity_and_address_log_probs_are_finite(data, variant):
    memory, queries = data
    layer = NormalizedSimilarity(variant)
    memory_t = tf.constant(memory)
    with tf.GradientTape() as tape:
        tape.watch(memory_t)
        scores = layer(memory_t, tf.constant(queries))
        q_a = tfd.Categorical(logits=scores)
        log_probs = q_a.log_prob(tf.range(len(memory))[:, None])  # [|M|, B]
        total = tf.reduce_sum(scores)
    assert scores.shape == (len(queries), len(memory))
    assert np.all(np.isfinite(scores.numpy()))
    assert np.all(np.isfinite(log_probs.numpy()))
    assert np.all(np.isfinite(tape.gradient(total, memory_t).numpy()))
    zero = ~memory.any(axis=1)
    np.testing.assert_array_equal(scores.numpy()[:, zero], 0.0)


@SETTINGS
@given(embeddings(), st.floats(1e-2, 1e2))
def test_normalized_similarity_ignores_the_memory_norm(data, scale):
    """S(c e_a, e_q) = S(e_a, e_q) for c > 0 (paper eq. 5), for every entry
    whose norm stays above the clipping eps."""
    memory, queries = data
    memory = memory.astype(np.float64)
    queries = queries.astype(np.float64)
    layer = NormalizedSimilarity("normalized", dtype="float64")
    big = np.linalg.norm(memory, axis=1) * min(scale, 1.0) > 1e-3
    a = layer(tf.constant(memory), tf.constant(queries)).numpy()
    b = layer(tf.constant(memory * scale), tf.constant(queries)).numpy()
    np.testing.assert_allclose(b[:, big], a[:, big], rtol=1e-9, atol=1e-9)


@st.composite
def log_weights(draw):
    k = draw(st.integers(2, 8))
    b = draw(st.integers(1, 3))
    spread = draw(st.sampled_from([1.0, 30.0, 1e3, 1e4]))
    values = draw(
        hnp.arrays(np.float64, (k, b), elements=st.floats(-spread, spread, width=32))
    )
    return values - draw(st.sampled_from([0.0, 1e4]))  # Also far below 0.


def _loo_reference(lw: np.ndarray, baseline: str) -> np.ndarray:
    """L_{-k} in float64 by direct enumeration (scipy-free logsumexp)."""
    k = lw.shape[0]
    out = np.empty_like(lw)
    for i in range(k):
        rest = np.delete(lw, i, axis=0)
        if baseline == "geometric":
            rest = np.concatenate([rest, rest.mean(0, keepdims=True)], 0)
        top = rest.max(0)
        out[i] = top + np.log(np.exp(rest - top).sum(0)) - np.log(len(rest))
    return out


@SETTINGS
@given(log_weights(), st.sampled_from(estimators.BASELINES))
def test_vimco_is_finite_exact_and_permutation_equivariant(lw, baseline):
    bound, loo = estimators.leave_one_out_bounds(tf.constant(lw), baseline)
    np.testing.assert_allclose(loo, _loo_reference(lw, baseline), rtol=1e-12, atol=1e-9)
    top = lw.max(0)
    np.testing.assert_allclose(
        bound, top + np.log(np.exp(lw - top).mean(0)), rtol=1e-12, atol=1e-9
    )
    w = estimators.normalized_weights(tf.constant(lw)).numpy()
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-12)
    assert np.all((w >= 0) & (w <= 1))

    # The surrogate: value L_K; d/d log q_a = learning signals; all finite.
    lw32 = tf.constant(lw, tf.float32)
    log_q = tf.zeros_like(lw32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([lw32, log_q])
        objective = estimators.vimco_objective(lw32, log_q, baseline)
    np.testing.assert_allclose(objective, estimators.iwae_bound(lw32), rtol=1e-6)
    grad_q = tape.gradient(objective, log_q).numpy()
    grad_w = tape.gradient(objective, lw32).numpy()
    assert np.all(np.isfinite(grad_q)) and np.all(np.isfinite(grad_w))
    # Against the independent float64 reference L - L_{-k} (of the float32
    # inputs), not the library's own `learning_signals`: float32 rounding of
    # log-weights up to ~2e4 in magnitude allows a few ulps of that size.
    lw_f32 = lw32.numpy().astype(np.float64)
    top32 = lw_f32.max(0)
    ref32 = top32 + np.log(np.exp(lw_f32 - top32).mean(0))
    ref32 = ref32[None] - _loo_reference(lw_f32, baseline)
    ulps = 8 * np.spacing(np.float32(np.abs(lw_f32).max()))
    np.testing.assert_allclose(grad_q, ref32, rtol=1e-5, atol=ulps + 1e-6)

    signals = estimators.learning_signals(tf.constant(lw), baseline).numpy()
    reference = (top + np.log(np.exp(lw - top).mean(0)))[None] - _loo_reference(
        lw, baseline
    )
    np.testing.assert_allclose(signals, reference, rtol=1e-12, atol=1e-9)
    perm = np.random.default_rng(0).permutation(lw.shape[0])
    permuted = estimators.learning_signals(tf.constant(lw[perm]), baseline).numpy()
    np.testing.assert_allclose(permuted, signals[perm], rtol=1e-12, atol=1e-9)


@st.composite
def episode_sizes(draw):
    n = draw(st.integers(1, 12))
    drawers = draw(st.integers(2, 20))
    c = draw(st.integers(1, n))
    f = draw(st.integers(0, n - c))
    t = draw(st.integers(1, drawers - 1))
    mpc = draw(st.integers(0, drawers - t))
    alphabets = draw(st.integers(1, n))
    alphabet = np.arange(n) % alphabets
    step = draw(st.integers(0, 2**31 - 1))
    return n, drawers, c, f, t, mpc, alphabet, step


@settings(max_examples=30, deadline=None, derandomize=True)
@given(episode_sizes())
def test_episode_sampler_invariants(sizes):
    n, drawers, c, f, t, mpc, alphabet, step = sizes
    # Image (i, d) is a 2x2 tile whose pixels spell i and d in base 256:
    # every gather is checkable (no two images alike).
    i, d = np.meshgrid(np.arange(n), np.arange(drawers), indexing="ij")
    images = np.stack([i % 256, i // 256, d % 256, d // 256], -1)
    images = images.reshape(n, drawers, 2, 2).astype(np.uint8)
    make = omniglot.episode_batch_fn(
        tf.constant(images), tf.constant(alphabet), c, t, mpc, f, seed=3, stream=1
    )
    batch = {k: v.numpy() for k, v in make(tf.constant(step, tf.int64)).items()}
    assert batch["x"].shape == (c * t, 2, 2, 1)
    assert batch["memory"].shape == ((c + f) * mpc, 2, 2, 1)
    x_pairs = set(zip(batch["x_label"], batch["x_drawer"]))
    m_pairs = set(zip(batch["memory_label"], batch["memory_drawer"]))
    assert len(x_pairs) == c * t and len(m_pairs) == (c + f) * mpc  # Distinct.
    assert not x_pairs & m_pairs  # A target is never in memory.
    targets = set(batch["x_label"])
    assert len(targets) == c
    if mpc:
        assert targets <= set(batch["memory_label"])
        assert len(set(batch["memory_label"])) == c + f
        assert np.all(
            np.bincount(batch["memory_label"], minlength=n)[list(targets)] == mpc
        )
    assert np.all(np.bincount(batch["x_label"], minlength=n)[list(targets)] == t)
    for key, label, drawer in (
        ("x", "x_label", "x_drawer"),
        ("memory", "memory_label", "memory_drawer"),
    ):
        np.testing.assert_array_equal(
            batch[key][..., 0], images[batch[label], batch[drawer]]
        )
    again = make(tf.constant(step, tf.int64))
    np.testing.assert_array_equal(again["x_label"], batch["x_label"])
