"""Omniglot conv networks: shapes, tied pyramid, soft attention, weight decay."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf import configs
from vma_tf.modeling import conv, networks, strided
from vma_tf.modeling.builders import build_model
from vma_tf.modeling.models import VAE, VMA, SoftAttentionVAE

from helpers import check_encoder_context_init

K, B, M = 3, 4, 5


def _config(preset="omniglot_fewshot", **model):
    cfg = configs.get_preset(preset).model
    return dataclasses.replace(
        cfg,
        **{
            "channels": 4,
            "hidden_units": (8,),
            "latent_dim": 3,
            "embed_dim": 5,
            "memory_size": M,
            **model,
        },
    )


def _images(shape, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant((rng.uniform(size=shape) > 0.7).astype(np.float32))


@pytest.mark.parametrize(
    "size,expected", [(26, [26, 26, 13, 7, 4]), (28, [28, 28, 14, 7, 4])]
)
def test_pyramid_resolutions(size, expected):
    feats = conv.ConvPyramid(6)(tf.zeros([2, size, size, 1]))
    assert [f.shape[1] for f in feats] == expected
    assert all(f.shape[0] == 2 and f.shape[-1] == 6 for f in feats)


@pytest.mark.parametrize("size", [26, 28])
def test_decoder_and_encoder_shapes(size):
    pyramid = conv.ConvPyramid(6, joint=True)
    feats = pyramid(tf.zeros([M, size, size, 1]))
    dec = conv.ConvDecoder((size, size, 1), channels=6, latent_dim=3)
    per_entry = dec.memory_features(feats)
    a = tf.zeros([K, B], tf.int32)
    gathered = tf.nest.map_structure(lambda t: tf.gather(t, a), per_entry)
    logits = dec(tf.zeros([K, B, 3]), gathered)
    assert logits.shape == (K, B, size, size, 1)
    enc = conv.ConvEncoder(pyramid, (8,), 6)
    m = tf.zeros([M, size, size, 1])
    out = enc(tf.zeros([B, size, size, 1]), tf.gather(enc.memory_features(m), a))
    assert out.shape == (K, B, 6)
    vae_dec = conv.ConvDecoder((size, size, 1), 6, 3, conditional=False)
    assert vae_dec(tf.zeros([K, B, 3])).shape == (K, B, size, size, 1)
    emb = conv.ConvEmbedder(6, (8,), 5)
    assert emb(tf.zeros([M, size, size, 1])).shape == (M, 5)


@pytest.mark.parametrize(
    "preset,cls",
    [
        ("omniglot_fewshot", VMA),
        ("omniglot_fewshot_vae", VAE),
        ("omniglot_fewshot_soft", SoftAttentionVAE),
        ("omniglot_learned", VMA),
        ("omniglot_gmn", VMA),
    ],
)
def test_conv_models_terms_shapes(preset, cls):
    # Table 1's model has linear heads (no hidden layer), its preset's own
    # (README "Deviations"): the override keeps them for this test.
    cfg = _config(preset, **({"hidden_units": ()} if preset == "omniglot_gmn" else {}))
    size = 28 if preset in ("omniglot_learned", "omniglot_gmn") else 26
    model = build_model(cfg, (size, size, 1), seed=0)
    assert isinstance(model, cls)
    if not cfg.hidden_units:
        configs.validate(configs.override(configs.get_preset(preset), hidden_units=()))
    x = _images([B, size, size, 1])
    memory = None if cfg.memory == "learned" else _images([M, size, size, 1], 1)
    terms = model.compute_terms(x, memory, K, seed=(1, 2))
    assert terms.log_weights.shape == (K, B)
    assert all(t.shape == (B,) for t in (terms.kl_a, terms.kl_z, terms.recon))
    assert np.all(np.isfinite(terms.log_weights.numpy()))
    if cls is not VMA:  # K = 1 (the ELBO; the paper's soft baseline) works too.
        configs.validate(configs.override(configs.get_preset(preset), num_samples=1))
        single = build_model(
            dataclasses.replace(cfg, num_samples=1), (size, size, 1), seed=0
        )
        loss, one = single.loss_and_terms(x, memory, seed=(1, 2))
        assert one.log_weights.shape == (1, B) and np.isfinite(loss.numpy())


@pytest.mark.parametrize("init", ["glorot", "standard_normal"])
def test_prior_z_init_reaches_the_conv_prior(init):
    """`prior_z_init="standard_normal"` makes the conv p(z|m_a) N(0, I) for
    every entry at initialisation; Keras' init does not."""
    model, _, memory = _vma(prior_z_init=init)
    p_z = networks.gaussian(model.memory_state(memory)["prior_z"])  # [|M|] x [Z]
    loc, scale = p_z.mean().numpy(), p_z.stddev().numpy()
    if init == "standard_normal":
        np.testing.assert_allclose(loc, 0.0, atol=1e-6)
        np.testing.assert_allclose(scale, 1.0, atol=1e-5)
    else:
        assert np.abs(loc).max() > 1e-3


@pytest.mark.parametrize("init", ["glorot", "zeros"])
def test_encoder_context_init_zeros_reaches_the_conv_encoder(init):
    """The m-half of the untied encoder pyramid's first conv starts at zero
    with `encoder_context_init="zeros"`: q(z|x, m_a) equal for every entry."""
    model, x, memory = _vma(encoder_context_init=init)
    check_encoder_context_init(
        model, x, memory, model.encoder.pyramid.convs[0].kernel, init == "zeros"
    )


def _vma(**model):
    model = build_model(_config(**model), (26, 26, 1), seed=0)
    x, memory = _images([B, 26, 26, 1]), _images([M, 26, 26, 1], 1)
    model.compute_terms(x, memory, K, seed=(0, 0))
    return model, x, memory


@pytest.mark.parametrize("tie_q", [False, True])
def test_tied_pyramid_is_one_set_of_variables_with_gradients_from_both_paths(tie_q):
    model, x, memory = _vma(tie_pyramid=tie_q)
    pyramid = model.memory_net  # m's pyramid: p(z|m_a) and p(x|z, m_a).
    ids = [id(v) for v in model.trainable_variables]
    assert len(ids) == len(set(ids))
    pyr_ids = {id(v) for v in pyramid.trainable_variables}
    assert pyr_ids and pyr_ids <= set(ids)
    # The embedders have pyramids of their own.
    emb = model.addressing.memory_embedder.pyramid
    assert not pyr_ids & {id(v) for v in emb.trainable_variables}
    enc_ids = {id(v) for v in model.encoder.pyramid.trainable_variables}
    if tie_q:
        assert model.encoder.pyramid is pyramid  # One layer object, not a copy.
    else:
        assert model.encoder.pyramid is not pyramid and not enc_ids & pyr_ids
    kernel = pyramid.convs[-1].kernel
    a = tf.zeros([K, B], tf.int32)
    gather = lambda t: tf.nest.map_structure(lambda u: tf.gather(u, a), t)
    with tf.GradientTape(persistent=True) as tape:
        feats = pyramid(memory)
        losses = {
            # p(z|m_a) path.
            "prior": tf.reduce_sum(model.prior_net(feats) ** 2),
            # p(x|z, m_a) path.
            "decoder": tf.reduce_sum(
                model.decoder(
                    tf.zeros([K, B, 3]), gather(model.decoder.memory_features(feats))
                )
                ** 2
            ),
            # q(z|x, m_a) path, x only (memory half held fixed).
            "encoder": tf.reduce_sum(
                model.encoder(
                    x, tf.stop_gradient(gather(model.encoder.memory_features(memory)))
                )
                ** 2
            ),
        }
    for name, loss in losses.items():
        g = tape.gradient(loss, kernel)
        if name == "encoder" and not tie_q:
            assert g is None, name
        else:
            assert g is not None and np.any(g.numpy() != 0), name


def test_soft_attention_reads_a_convex_combination():
    model = build_model(_config("omniglot_fewshot_soft"), (26, 26, 1), seed=0)
    same = tf.repeat(_images([1, 26, 26, 1], 3), M, axis=0)
    z = tf.random.stateless_normal([K, B, 3], seed=[1, 1])
    read, weights = model.attention_readout(z, same)
    assert read.shape == (K, B, 26, 26, 1) and weights.shape == (K, B, M)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1).numpy(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        read.numpy(), np.broadcast_to(same[0].numpy(), read.shape), atol=1e-5
    )


@pytest.mark.parametrize("tie_q", [False, True])
def test_soft_attention_q_shares_the_readout_pyramid(tie_q):
    """Soft attention's q(z|x) runs on the pyramid the decoder reads m(z)
    through, one set of variables trained by both, whatever `tie_pyramid`
    (the VMA's option; its own pyramid measured worse for soft attention)."""
    model = build_model(
        _config("omniglot_fewshot_soft", tie_pyramid=tie_q), (26, 26, 1), seed=0
    )
    x, memory = _images([B, 26, 26, 1]), _images([M, 26, 26, 1], 1)
    with tf.GradientTape() as tape:
        terms = model.compute_terms(x, memory, K, seed=(0, 0))
        loss = -tf.reduce_mean(terms.log_weights)
    assert model.encoder.pyramid is model.memory_net
    assert model.memory_net.convs[0].kernel.shape[2] == 1  # x or m(z) alone.
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)  # Every variable is used.


def test_weight_decay_excludes_learned_memory():
    model = build_model(_config("omniglot_learned"), (28, 28, 1), seed=0)
    model.compute_terms(_images([B, 28, 28, 1]), None, K, seed=(0, 0))
    mem = model.memory.memory
    want = sum(
        float(tf.reduce_sum(tf.square(v)))
        for v in model.trainable_variables
        if v is not mem
    )
    assert model.weight_decay == pytest.approx(3e-4)
    np.testing.assert_allclose(float(model.l2_penalty()), want, rtol=1e-5)
    assert float(tf.reduce_sum(tf.square(mem))) > 0


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_conv_step_compiles_and_matches_eager():
    losses = {}
    for jit in (True, False):
        keras.utils.set_random_seed(0)
        model = build_model(_config(), (26, 26, 1), seed=0)
        data = {"x": _images([B, 26, 26, 1]), "memory": _images([M, 26, 26, 1], 1)}
        model.compute_terms(data["x"], data["memory"], K, seed=(0, 0))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        hist = model.fit(
            tf.data.Dataset.from_tensors(data).repeat(),
            steps_per_epoch=1,
            epochs=2,
            verbose=0,
            shuffle=False,
        )
        losses[jit] = hist.history["loss"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


@pytest.mark.parametrize("levels", [0, 3, 4])
def test_skip_levels_select_which_resolutions_see_m(levels):
    pyramid = conv.ConvPyramid(4)
    memory = _images([M, 26, 26, 1])
    dec = conv.ConvDecoder((26, 26, 1), channels=4, latent_dim=3, skip_levels=levels)
    a = tf.zeros([K, B], tf.int32)
    # Leaf tensors (the 4x4 skip is also the top that m_vec is computed from).
    per_entry = [tf.identity(t) for t in dec.memory_features(pyramid(memory))]
    with tf.GradientTape() as tape:
        tape.watch(per_entry)
        gathered = tf.nest.map_structure(lambda t: tf.gather(t, a), per_entry)
        out = tf.reduce_sum(dec(tf.zeros([K, B, 3]), gathered) ** 2)
    grads = tape.gradient(out, per_entry)  # m_vec, then skips at 4, 7, 13, 26.
    used = [
        g is not None and bool(np.any(tf.convert_to_tensor(g).numpy() != 0))
        for g in grads[1:]
    ]
    assert grads[0] is not None
    assert used == [i < levels for i in range(4)]


# -- fast stride-2 convolutions and per-entry skip projections ---------------


def _copy_weights(dst, src):
    assert [v.shape for v in dst.weights] == [v.shape for v in src.weights]
    for a, b in zip(dst.weights, src.weights):
        a.assign(b)


@pytest.mark.parametrize("size", [1, 2, 4, 7, 13, 14, 26, 28])
def test_fast_strided_and_transposed_convs_equal_keras_values_and_gradients(size):
    rng = np.random.default_rng(size)
    x = tf.constant(rng.normal(size=(2, size, size + 1, 3)), tf.float32)
    pairs = [
        (
            conv.StridedConv2D(4, activation="relu"),
            keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        ),
        (
            conv.SubPixelConv2DTranspose(4),
            keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
        ),
    ]
    for fast, ref in pairs:
        ref.build(x.shape)
        fast.build(x.shape)
        ref.bias.assign(rng.normal(size=4).astype(np.float32))
        _copy_weights(fast, ref)
        outs, grads = [], []
        for layer in (fast, ref):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(tf.sin(y))
            outs.append(y)
            grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
        assert outs[0].shape == outs[1].shape
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
        for g_fast, g_ref in zip(*grads):
            np.testing.assert_allclose(g_fast, g_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("refine", [0, 2])
def test_decoder_skip_projection_equals_concatenation(refine):
    """conv([relu(h), s]) with the s-half once per entry is the concat conv;
    with `refine` layers the full-resolution skip enters the first of them."""
    pyramid = conv.ConvPyramid(6)
    feats = pyramid(_images([M, 26, 26, 1]))
    dec = conv.ConvDecoder((26, 26, 1), channels=6, latent_dim=3, refine=refine)
    a = tf.constant([[0, 3, 3, 1], [4, 4, 2, 0], [1, 1, 1, 1]])
    z = tf.random.stateless_normal([K, B, 3], seed=(1, 2))
    gather = lambda t: tf.nest.map_structure(lambda u: tf.gather(u, a), t)
    logits = dec(z, gather(dec.memory_features(feats)))
    # The plain formulation: concatenate the gathered skip activations.
    skips = [tf.reshape(s, [-1, *s.shape[2:]]) for s in reversed(gather(feats[1:]))]
    m_vec = tf.reshape(gather(dec.m_proj(conv._flat_top(feats))), [-1, 3])
    h = dec.to_map(tf.concat([tf.reshape(z, [-1, 3]), m_vec], -1))
    h = tf.reshape(h, [-1, 4, 4, 6])
    for i, (c, up) in enumerate(zip(dec.convs, dec.upconvs)):
        h = c(tf.concat([tf.nn.relu(h), skips[i]], -1))
        th = dec.sizes[-2 - i][0]
        h = up(h)[:, :th, :th]
    h = tf.concat([tf.nn.relu(h), skips[-1]], -1)
    for layer in dec.refine:
        h = layer(h)
    ref = dec.out(h)
    assert len(dec.refine) == refine
    np.testing.assert_allclose(
        logits, tf.reshape(ref, [K, B, 26, 26, 1]), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("preset", ["omniglot_fewshot", "omniglot_fewshot_soft"])
def test_fast_convs_give_the_reference_model_with_the_same_variables(preset):
    x, mem = _images([B, 26, 26, 1], 1), _images([M, 26, 26, 1], 2)
    models = []
    for fast in (True, False):
        model = build_model(_config(preset, fast_convs=fast), (26, 26, 1))
        model.compute_terms(x, mem, K, seed=(0, 0))
        models.append(model)
    fast, ref = models
    # Same variable paths in the same order: checkpoints are interchangeable.
    assert [v.path for v in fast.variables] == [v.path for v in ref.variables]
    for a, b in zip(fast.variables, ref.variables):
        a.assign(b)
    t_fast = fast.compute_terms(x, mem, K, seed=(3, 4))
    t_ref = ref.compute_terms(x, mem, K, seed=(3, 4))
    np.testing.assert_allclose(t_fast.log_weights, t_ref.log_weights, rtol=1e-5)


@pytest.mark.parametrize("preset", ["omniglot_fewshot", "omniglot_fewshot_soft"])
def test_variable_paths_are_scoped_and_unique(preset):
    """Checkpoints key on variable paths: the decoder's convs, built in
    `memory_features` before the decoder is first called, must still get
    `decoder/...` paths (as when built inside `call`)."""
    model = build_model(_config(preset), (26, 26, 1))
    model.compute_terms(
        _images([B, 26, 26, 1]), _images([M, 26, 26, 1], 1), K, seed=(0, 0)
    )
    paths = [v.path for v in model.variables]
    assert len(paths) == len(set(paths))
    dec = model.decoder
    convs = [*dec.convs, *dec.upconvs, dec.out]
    assert all(v.path.startswith("decoder/") for c in convs for v in c.variables)


# -- the z part's per-entry nets on the addressed entries (|M| > K B) ---------


@pytest.mark.parametrize(
    "preset,size", [("omniglot_fewshot", 26), ("omniglot_learned", 28)]
)
def test_per_sample_entry_work_gives_the_same_terms_and_gradients(preset, size):
    """`entry_work="per_sample"` (the z part's nets on the K B addressed
    entries, what "auto" does for |M| > K B) computes the same log-weights,
    diagnostics and gradients as running them once per entry and gathering."""
    rows = 2 * K * B  # |M| > K B: "auto" picks the per-sample path.
    model = build_model(_config(preset, memory_size=rows), (size, size, 1), seed=0)
    x = _images([B, size, size, 1])
    memory = None if preset == "omniglot_learned" else _images([rows, size, size, 1], 1)
    model.compute_terms(x, memory, K, seed=(0, 0))
    assert model._per_sample_entries(memory, K, x)
    assert not model._per_sample_entries(memory, rows, x)  # K B >= |M|.
    results = {}
    for work in ("per_entry", "per_sample", "auto"):
        model.entry_work = work
        with tf.GradientTape() as tape:
            terms = model.compute_terms(x, memory, K, seed=(3, 4))
            loss = -tf.reduce_sum(terms.log_weights)
        grads = tape.gradient(loss, model.trainable_variables)
        results[work] = (terms, grads)
    ref_terms, ref_grads = results["per_entry"]
    for work in ("per_sample", "auto"):
        terms, grads = results[work]
        np.testing.assert_array_equal(terms.addresses, ref_terms.addresses)
        for name in ("log_weights", "log_q_a", "kl_a", "kl_z", "recon"):
            np.testing.assert_allclose(
                getattr(terms, name), getattr(ref_terms, name), rtol=1e-5, atol=1e-4
            )
        assert len(grads) == len(ref_grads) > 20
        for v, g, r in zip(model.trainable_variables, grads, ref_grads):
            assert (g is None) == (r is None), v.path
            if g is not None:
                np.testing.assert_allclose(
                    tf.convert_to_tensor(g),
                    tf.convert_to_tensor(r),
                    rtol=1e-4,
                    atol=1e-5,
                    err_msg=v.path,
                )


def test_bias_gradients_under_mixed_bfloat16_accumulate_in_float32():
    """A bias gradient sums the output gradient over every position.
    bfloat16's `BiasAddGrad` sums in bfloat16 (~20-40 % off over
    `[128, 28, 28]`); the fast convs and `add_bias` (the decoder's merged skip
    conv) give the exact sum to the rounding of one bfloat16 result."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(128, 28, 28, 2)), tf.float32)
    layers = [
        conv.StridedConv2D(4, dtype="mixed_bfloat16"),
        conv.SubPixelConv2DTranspose(4, dtype="mixed_bfloat16"),
    ]
    for layer in layers:
        layer.build(x.shape)
        out_shape = layer.compute_output_shape(x.shape)
        g = tf.cast(rng.normal(0.05, 1.0, size=out_shape), tf.bfloat16)
        with tf.GradientTape() as tape:
            y = layer(x)
        assert y.dtype == tf.bfloat16
        grad = tape.gradient(y, layer.bias, output_gradients=g)
        exact = tf.reduce_sum(tf.cast(g, tf.float64), axis=[0, 1, 2])
        np.testing.assert_allclose(grad, exact, rtol=1e-2, err_msg=layer.name)
    y = tf.constant(rng.normal(size=(128, 28, 28, 4)), tf.bfloat16)
    bias = tf.Variable(tf.zeros([4]))
    g = tf.cast(rng.normal(0.05, 1.0, size=y.shape), tf.bfloat16)
    with tf.GradientTape() as tape:
        out = strided.add_bias(y, bias)
    grad = tape.gradient(out, bias, output_gradients=g)
    exact = tf.reduce_sum(tf.cast(g, tf.float64), axis=[0, 1, 2])
    np.testing.assert_allclose(grad, exact, rtol=1e-2)
