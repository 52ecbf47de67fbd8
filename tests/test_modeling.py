"""Layers, distribution shapes, sampling and the compiled train step."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import configs
from vma_tf.modeling import networks, sampling
from vma_tf.modeling.addressing import AddressingHead
from vma_tf.modeling.builders import build_mlp_model
from vma_tf.modeling.memory import MemoryBuffer
from vma_tf.modeling.models import VAE, VMA
from vma_tf.modeling.similarity import NormalizedSimilarity

from helpers import check_encoder_context_init

tfd = tfp.distributions
B, K, M, D = 6, 4, 5, 784


def _binary(rng, shape):
    return tf.constant((rng.uniform(size=shape) > 0.5).astype(np.float32))


def _model(kind="vma", memory="episodic", seed=0, **kw):
    cfg = configs.ModelConfig(
        kind=kind, memory=memory, memory_size=M, memory_dim=16, num_samples=K, **kw
    )
    keras.utils.set_random_seed(seed)
    return build_mlp_model(cfg, (D,), seed=seed)


# -- MemoryBuffer ----------------------------------------------------------


def test_learned_memory_is_a_trainable_variable_and_can_be_overridden():
    mem = MemoryBuffer((16,), size=M, learned=True)
    out = mem()
    assert out.shape == (M, 16)
    assert [v.path for v in mem.trainable_variables] == [mem.memory.path]
    other = tf.ones([3, 16])
    np.testing.assert_array_equal(mem(other).numpy(), other.numpy())


def test_episodic_memory_needs_contents_of_the_right_shape():
    mem = MemoryBuffer((D,), learned=False)
    assert not mem.trainable_variables
    assert mem(tf.zeros([7, D])).shape == (7, D)
    with pytest.raises(ValueError, match="contents"):
        mem()
    with pytest.raises(ValueError, match="shape"):
        mem(tf.zeros([7, 10]))


# -- NormalizedSimilarity -------------------------------------------------


@pytest.mark.parametrize("variant", ["normalized", "dot", "cosine"])
def test_similarity_values(variant):
    rng = np.random.default_rng(0)
    e_m, e_q = rng.normal(size=(M, 8)), rng.normal(size=(3, B, 8))
    got = NormalizedSimilarity(variant)(tf.constant(e_m), tf.constant(e_q))
    want = e_q @ e_m.T
    if variant != "dot":
        want = want / np.linalg.norm(e_m, axis=-1)
    if variant == "cosine":
        want = want / np.linalg.norm(e_q, axis=-1, keepdims=True)
    assert got.shape == (3, B, M)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["normalized", "dot", "cosine"])
def test_zero_embeddings_give_finite_scores_and_gradients(variant):
    e_m, e_q = tf.Variable(tf.zeros([M, 8])), tf.Variable(tf.zeros([B, 8]))
    with tf.GradientTape() as tape:
        s = NormalizedSimilarity(variant)(e_m, e_q)
        total = tf.reduce_sum(s)
    grads = tape.gradient(total, [e_m, e_q])
    assert np.all(np.isfinite(s.numpy()))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_all_zero_inputs_sample_valid_addresses():
    """The reported bug: zero inputs -> NaN logits -> out-of-range samples."""
    model = _model()
    # Zero every weight: all embeddings are exactly 0.
    for v in model.addressing.trainable_variables:
        v.assign(tf.zeros_like(v))
    x, mem = tf.zeros([B, D]), tf.zeros([M, D])
    terms = model.compute_terms(x, mem, K, seed=(1, 2))
    a = terms.addresses.numpy()
    assert a.min() >= 0 and a.max() < M
    for t in (terms.log_weights, terms.kl_a, terms.kl_z, terms.recon):
        assert np.all(np.isfinite(t.numpy()))


# -- Addressing head and distribution shapes --------------------------------


def test_addressing_distributions_shapes_and_shared_embedding():
    model = _model()
    rng = np.random.default_rng(1)
    x, mem = _binary(rng, (B, D)), _binary(rng, (M, D))
    q_a, p_a = model.address_distributions(x, mem)
    assert isinstance(q_a, tfd.Categorical) and isinstance(p_a, tfd.Categorical)
    assert q_a.batch_shape == (B,) and q_a.event_shape == ()
    assert q_a.logits.shape == (B, M)
    assert p_a.batch_shape == () and p_a.logits.shape == (M,)
    # p(a) shares h with q(a|x): its gradient reaches the memory embedder.
    with tf.GradientTape() as tape:
        _, p_a = model.address_distributions(x, mem)
        lp = p_a.log_prob(0)
    embedder = model.addressing.memory_embedder.trainable_variables
    grads = tape.gradient(lp, embedder)
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_flat_prior_is_uniform():
    model = _model(prior="flat")
    rng = np.random.default_rng(2)
    _, p_a = model.address_distributions(_binary(rng, (B, D)), _binary(rng, (M, D)))
    np.testing.assert_allclose(
        p_a.probs_parameter().numpy(), np.full(M, 1 / M), rtol=1e-6
    )


def test_addressing_head_call_returns_categoricals():
    head = AddressingHead(networks.mlp((8,), 4), networks.mlp((8,), 4), embed_dim=4)
    q_a, p_a = head(tf.ones([M, 4]), tf.ones([B, 3]))
    assert q_a.batch_shape == (B,) and p_a.batch_shape == ()


def test_conditional_heads_and_terms_shapes():
    model = _model()
    rng = np.random.default_rng(3)
    x, mem = _binary(rng, (B, D)), _binary(rng, (M, D))
    terms = model.compute_terms(x, mem, K, seed=(3, 4))
    assert terms.log_weights.shape == (K, B)
    assert terms.log_q_a.shape == (K, B)
    assert terms.addresses.shape == (K, B)
    for t in (terms.kl_a, terms.kl_z, terms.recon):
        assert t.shape == (B,)
    assert np.all(terms.kl_a.numpy() >= -1e-5)
    assert np.all(terms.kl_z.numpy() >= 0)
    q = networks.gaussian(tf.zeros([K, B, 64]))
    assert q.batch_shape == (K, B) and q.event_shape == (32,)
    p = networks.bernoulli(tf.zeros([K, B, D]))
    assert p.batch_shape == (K, B) and p.event_shape == (D,)
    assert p.log_prob(x).shape == (K, B)
    assert networks.standard_gaussian(32, tf.float32).event_shape == (32,)


def test_vae_terms_shapes():
    model = _model(kind="vae")
    x = _binary(np.random.default_rng(4), (B, D))
    terms = model.compute_terms(x, None, K, seed=(0, 1))
    assert terms.log_weights.shape == (K, B) and terms.log_q_a is None
    np.testing.assert_array_equal(terms.kl_a.numpy(), np.zeros(B))


@pytest.mark.parametrize("init", ["glorot", "zeros"])
def test_encoder_context_init_zeros_starts_q_z_as_q_z_given_x(init):
    """`encoder_context_init="zeros"` (mnist_learned): the MLP q(z|x, m_a)
    starts equal for every entry and still learns how to use m_a."""
    model = _model(memory="learned", encoder_context_init=init)
    x = _binary(np.random.default_rng(6), (B, D))
    model.compute_terms(x, None, K, seed=(0, 1))
    check_encoder_context_init(
        model, x, None, model.encoder.context_proj.kernel, zeros=init == "zeros"
    )


@pytest.mark.parametrize("context", ["first", "all"])
def test_conditional_mlp_equals_mlp_on_concatenation(context):
    """Per-entry features gathered by address == the MLP on [input, m_a]."""
    rng = np.random.default_rng(5)
    net = networks.ConditionalMLP((7, 5), 3, context=context)
    inp, mem = rng.normal(size=(K, B, 4)), rng.normal(size=(M, 6))
    a = rng.integers(0, M, size=(K, B))
    got = net(
        tf.constant(inp, tf.float32),
        tf.gather(net.memory_features(tf.constant(mem, tf.float32)), a),
    )
    # Reference: each layer on the concatenation [h, m_a].
    relu = lambda v: np.maximum(v, 0)
    w_ctx = net.context_proj.kernel.numpy()
    splits = np.cumsum(net._context_sizes)[:-1]
    ctx = np.split(mem[a] @ w_ctx, splits, axis=-1)
    h = inp
    for i, layer in enumerate(net.dense_layers):
        h = h @ layer.kernel.numpy() + layer.bias.numpy()
        if i < len(ctx):
            h = h + ctx[i]
        if i < len(net.dense_layers) - 1:
            h = relu(h)
    np.testing.assert_allclose(got.numpy(), h, rtol=1e-4, atol=1e-5)


# -- sampling ---------------------------------------------------------------


def test_categorical_sampler_frequencies_and_determinism():
    logits = tf.math.log(tf.constant([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    a = sampling.categorical(logits, 200_000, seed=tf.constant([1, 2]))
    assert a.shape == (200_000, 2)
    for b in range(2):
        freq = np.bincount(a[:, b].numpy(), minlength=4) / 200_000
        np.testing.assert_allclose(freq, tf.exp(logits[b]).numpy(), atol=5e-3)
    again = sampling.categorical(logits, 200_000, seed=tf.constant([1, 2]))
    np.testing.assert_array_equal(a.numpy(), again.numpy())


def test_extreme_random_bits_give_finite_noise():
    """The extreme bit patterns map inside (0, 1): finite normals and Gumbels."""
    bits = tf.constant([0, 1, 2**31, 2**32 - 2, 2**32 - 1], tf.uint64)
    for dtype in (tf.float32, tf.float64):
        u = sampling.bits_to_unit(tf.cast(bits, tf.uint32), dtype).numpy()
        assert np.all(u > 0) and np.all(u < 1)
        assert np.all(np.isfinite(tf.math.ndtri(u).numpy()))
        assert np.all(np.isfinite(-np.log(-np.log(u))))


def test_normal_sampler_is_reparameterised():
    loc = tf.Variable([0.5, -1.0])
    with tf.GradientTape() as tape:
        z = sampling.sample(tfd.Normal(loc, 2.0), tf.constant([3, 4]), [1000])
        s = tf.reduce_sum(z)
    np.testing.assert_allclose(tape.gradient(s, loc).numpy(), [1000.0, 1000.0])
    assert abs(float(tf.math.reduce_std(z[:, 0])) - 2.0) < 0.15


def test_bfloat16_normal_noise_is_the_float32_noise_rounded():
    """TF's CPU inverse normal CDF has no bfloat16 kernel: the noise is drawn
    in float32 and rounded, so `mixed_bfloat16` sampling runs on CPU."""
    s = tf.constant([5, 6])
    wide = sampling.standard_normal([4, 3], s, tf.float32)
    narrow = sampling.standard_normal([4, 3], s, tf.bfloat16)
    assert narrow.dtype == tf.bfloat16
    np.testing.assert_array_equal(narrow.numpy(), tf.cast(wide, tf.bfloat16).numpy())


def test_sampling_is_identical_with_and_without_xla():
    logits = tf.random.stateless_normal([B, M], seed=[0, 1])
    seed = tf.constant([9, -9])  # Negative seeds come out of stateless_split.
    f = lambda l, s: (
        sampling.categorical(l, K, s),
        sampling.standard_normal([K, B, 3], s),
    )
    a1, z1 = f(logits, seed)
    a2, z2 = tf.function(f, jit_compile=True)(logits, seed)
    np.testing.assert_array_equal(a1.numpy(), a2.numpy())
    np.testing.assert_allclose(z1.numpy(), z2.numpy(), rtol=1e-5, atol=1e-5)


# -- the compiled train step -------------------------------------------------


def _fit_losses(jit, kind="vma", memory="episodic", steps=3):
    model = _model(kind=kind, memory=memory, seed=0)
    rng = np.random.default_rng(6)
    data = {"x": _binary(rng, (B, D))}
    if kind == "vma" and memory == "episodic":
        data["memory"] = _binary(rng, (M, D))
    model.compute_terms(data["x"], data.get("memory"), K, seed=(0, 0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    assert model.jit_compile is jit
    ds = tf.data.Dataset.from_tensors(data).repeat()
    hist = model.fit(ds, steps_per_epoch=1, epochs=steps, verbose=0, shuffle=False)
    return hist.history, [v.numpy() for v in model.trainable_variables], model


@pytest.mark.parametrize(
    "kind,memory",
    [
        # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
        pytest.param("vma", "episodic", marks=pytest.mark.slow),
        pytest.param("vma", "learned", marks=pytest.mark.slow),
        ("vae", "episodic"),
    ],
)
def test_xla_step_matches_uncompiled_step(kind, memory):
    h_xla, w_xla, _ = _fit_losses(True, kind, memory)
    h_tf, w_tf, _ = _fit_losses(False, kind, memory)
    for name in ("loss", "nll_bound", "kl_a", "kl_z", "recon"):
        np.testing.assert_allclose(
            h_xla[name], h_tf[name], rtol=1e-4, atol=1e-4, err_msg=name
        )
    # Adam moves each weight by up to lr = 1e-3 per step, even for a gradient
    # near 0 whose sign rounding can flip: bound the worst weight by one step,
    # and require the bulk to agree to a tenth of one step (the VAE's 99 %
    # quantile measured 1.5e-5 on this machine, 2026-12-02, also at 9befe2b; a real
    # divergence moves weights by whole steps).
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w_xla, w_tf)])
    assert diff.max() <= 1e-3
    assert np.quantile(diff, 0.99) <= 1e-4
    assert np.median(diff) <= 1e-6


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_same_seed_same_numbers():
    h1, w1, _ = _fit_losses(True)
    h2, w2, _ = _fit_losses(True)
    assert h1 == h2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_nonfinite_step_is_recorded():
    _, _, model = _fit_losses(True, steps=2)
    assert int(model.first_nonfinite_step.numpy()) == -1
    bad = {"x": tf.fill([B, D], float("nan")), "memory": tf.zeros([M, D])}
    model.fit(
        tf.data.Dataset.from_tensors(bad).repeat(),
        steps_per_epoch=2,
        epochs=1,
        verbose=0,
        shuffle=False,
    )
    assert int(model.first_nonfinite_step.numpy()) == 3  # 1-based step.


def test_nonfinite_guard_keeps_the_inner_optimizer_state():
    """The optimizer wrapper adds no variable of its own: `variables`,
    `iterations` and `learning_rate` are the inner Adam's (checkpoints of
    the optimizer are unchanged)."""
    from vma_tf.modeling.nonfinite import NonFiniteGuard

    model = _model()
    adam = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=adam)
    assert isinstance(model.optimizer, NonFiniteGuard)
    assert model.optimizer.inner_optimizer is adam
    assert model.optimizer.first_nonfinite_step is model.first_nonfinite_step
    assert model.optimizer.iterations is adam.iterations
    model.optimizer.build(model.trainable_variables)
    assert [v.path for v in model.optimizer.variables] == [
        v.path for v in adam.variables
    ]


def test_model_kind_and_architecture_registries_match_the_schema():
    from vma_tf.modeling import builders

    assert tuple(builders.MODEL_KINDS) == configs.KINDS
    assert tuple(builders.ARCHITECTURES) == configs.ARCHITECTURES


def test_models_are_keras3():
    model = _model()
    assert isinstance(model, keras.Model) and isinstance(model, VMA)
    assert keras.__version__.startswith("3.")
    assert isinstance(_model(kind="vae"), VAE)


def test_chunked_draws_reproduce_the_unchunked_draw():
    """Samples [k0, k0 + k) drawn with offset k0 equal that slice of one draw."""
    seed = tf.constant([4, -5])
    logits = tf.random.stateless_normal([3, 7], seed=[1, 2])
    full = sampling.categorical(logits, 10, seed)
    parts = [
        sampling.categorical(logits, 3, seed, 0),
        sampling.categorical(logits, 5, seed, 3),
        sampling.categorical(logits, 2, seed, 8),
    ]
    np.testing.assert_array_equal(tf.concat(parts, 0).numpy(), full.numpy())
    normal = tfd.Independent(tfd.Normal(tf.zeros([3, 5]), 1.0), 1)
    full = sampling.sample(normal, seed, [9])
    parts = [
        sampling.sample(normal, seed, [4], 0),
        sampling.sample(normal, seed, [5], 4),
    ]
    # The random bits are equal; their normal transform may round 1 ulp
    # apart where a SIMD loop handles the tail of a shorter chunk (seen on
    # this machine, 2026-12-02, at 9befe2b too).
    bits = sampling.random_bits([9 * 15], seed)
    chunked = [
        sampling.random_bits([4 * 15], seed),
        sampling.random_bits([5 * 15], seed, 4 * 15),
    ]
    np.testing.assert_array_equal(tf.concat(chunked, 0).numpy(), bits.numpy())
    np.testing.assert_allclose(
        tf.concat(parts, 0).numpy(), full.numpy(), rtol=0, atol=1e-6
    )
    public = tf.random.stateless_uniform(
        [11], seed=[4, 5], minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    np.testing.assert_array_equal(
        sampling.random_bits([11], [4, 5]).numpy(), public.numpy()
    )


def test_two_stage_categorical_for_large_memory_is_exact_and_chunkable():
    """Above HIERARCHICAL_MIN_CATEGORIES, group-then-entry sampling: the
    frequencies match softmax(logits), padded slots are never drawn, and
    chunks of the draw reproduce the whole draw (same seed, offsets).

    Several hot entries share a group, also the padded last group, so a group
    logit other than the logsumexp of its entries (e.g. their max) changes
    the group frequencies."""
    n = sampling.HIERARCHICAL_MIN_CATEGORIES + 700  # last group padded
    size = sampling.HIERARCHICAL_GROUP_SIZE
    last = (n - 1) // size * size  # first entry of the padded group
    logits = np.full([2, n], -30.0, np.float32)
    # Row 0: three entries in group 2 (0.6 in all) against one in group 10.
    hot0 = {2 * size + 3: 0.2, 2 * size + 100: 0.2, 3 * size - 1: 0.2, 10 * size: 0.4}
    # Row 1: three in the padded group (0.5) against two in group 0.
    hot1 = {last: 0.15, last + 50: 0.15, n - 1: 0.2, 0: 0.25, 7: 0.25}
    for b, hot in enumerate((hot0, hot1)):
        logits[b, list(hot)] = np.log(np.array(list(hot.values()), np.float32))
    logits = tf.constant(logits)
    draw = sampling.categorical(logits, 4000, seed=(5, 6)).numpy()
    assert draw.shape == (4000, 2) and draw.min() >= 0 and draw.max() < n
    probs = tf.nn.softmax(logits).numpy()
    for b in range(2):
        counts = np.bincount(draw[:, b], minlength=n)
        sd = np.sqrt(4000 * probs[b] * (1 - probs[b]))
        assert np.all(np.abs(counts - 4000 * probs[b]) <= 5 * sd + 1)
        # Group frequencies: 0.6 / 0.4 and 0.5 / 0.5 (the max would give
        # 1/3 / 2/3 and 4/9 / 5/9).
        per_group = np.bincount(draw[:, b] // size, minlength=n // size + 1)
        group_probs = np.bincount(np.arange(n) // size, probs[b])
        sd = np.sqrt(4000 * group_probs * (1 - group_probs))
        assert np.all(np.abs(per_group - 4000 * group_probs) <= 5 * sd + 1)
    parts = [
        sampling.categorical(logits, 1000, seed=(5, 6), offset=k).numpy()
        for k in range(0, 4000, 1000)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), draw)
