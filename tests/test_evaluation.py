"""Streamed many-sample evaluation."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf import configs, estimators
from vma_tf.evaluation import StreamedBound, mean_and_stderr
from vma_tf.modeling.builders import build_model


def _model(preset):
    cfg = configs.get_preset(preset).model
    cfg = dataclasses.replace(
        cfg,
        hidden_units=(16,),
        latent_dim=3,
        embed_dim=4,
        memory_size=6,
        channels=4,
        memory_dim=8,
    )
    shape = (784,) if cfg.architecture == "mlp" else (26, 26, 1)
    keras.utils.set_random_seed(0)
    model = build_model(cfg, shape, seed=0)
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(5, *shape)) > 0.7).astype(np.float32)
    memory = None
    if cfg.kind != "vae" and cfg.memory == "episodic":
        memory = (rng.uniform(size=(6, *shape)) > 0.7).astype(np.float32)
    model.compute_terms(x, memory, 2, seed=(0, 0))
    return model, x, memory


@pytest.mark.parametrize(
    "preset",
    [
        "mnist_recall",
        "mnist_learned",
        "mnist_vae",
        "omniglot_fewshot",
        "omniglot_fewshot_soft",
    ],
)
def test_chunked_equals_unchunked(preset):
    model, x, memory = _model(preset)
    k = 23
    whole = StreamedBound(model, chunk_size=k, jit=False)(x, memory, k, seed=(3, 4))
    chunked = StreamedBound(model, chunk_size=5)(x, memory, k, seed=(3, 4))
    for key in whole:
        np.testing.assert_allclose(
            chunked[key], whole[key], rtol=2e-5, atol=2e-5, err_msg=key
        )
    # And both equal the bound of one direct K-sample draw.
    terms = model.compute_terms(x, memory, k, seed=tf.constant([3, 4]))
    np.testing.assert_allclose(
        whole["nll_bound"], -estimators.iwae_bound(terms.log_weights).numpy(), rtol=1e-5
    )


def test_more_samples_tighten_the_bound_on_average():
    model, x, memory = _model("mnist_recall")
    stream = StreamedBound(model, chunk_size=50)
    small = stream(x, memory, 2, seed=(1, 1))["nll_bound"].mean()
    large = stream(x, memory, 500, seed=(1, 1))["nll_bound"].mean()
    assert large <= small


def test_mean_and_stderr():
    mean, se = mean_and_stderr(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
