"""Omniglot conv networks: shapes, tied pyramid, soft attention, weight decay."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf import configs
from vma_tf.modeling import conv
from vma_tf.modeling.builders import build_model
from vma_tf.modeling.models import VAE, VMA, SoftAttentionVAE

K, B, M = 3, 4, 5


def _config(preset="omniglot_fewshot", **model):
    cfg = configs.get_preset(preset).model
    return dataclasses.replace(
        cfg,
        channels=4,
        hidden_units=(8,),
        latent_dim=3,
        embed_dim=5,
        memory_size=M,
        **model,
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
    ],
)
def test_conv_models_terms_shapes(preset, cls):
    cfg = _config(preset)
    size = 28 if preset == "omniglot_learned" else 26
    model = build_model(cfg, (size, size, 1), seed=0)
    assert isinstance(model, cls)
    x = _images([B, size, size, 1])
    memory = None if cfg.memory == "learned" else _images([M, size, size, 1], 1)
    terms = model.compute_terms(x, memory, K, seed=(1, 2))
    assert terms.log_weights.shape == (K, B)
    assert all(t.shape == (B,) for t in (terms.kl_a, terms.kl_z, terms.recon))
    assert np.all(np.isfinite(terms.log_weights.numpy()))


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
