"""Streamed many-sample evaluation."""

import contextlib
import dataclasses
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from vma_tf import address_health, configs, estimators
from vma_tf.evaluation import StreamedBound, clustered_stderr, mean_and_stderr
from vma_tf.modeling.builders import build_model
from vma_tf.modeling.models import VMA, SoftAttentionVAE


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


@pytest.mark.parametrize(
    "preset", ["mnist_recall", "mnist_learned", "omniglot_fewshot"]
)
def test_pair_state_gives_the_per_sample_terms(preset):
    """q(z|x, m_a) and the KL of z computed once per (entry, target) pair and
    gathered by address (`pairs=`, what `StreamedBound` uses) give the terms
    of the per-sample computation: the same addresses and z noise, the same
    numbers to float rounding."""
    model, x, memory = _model(preset)  # 6 entries, 5 targets.
    state = model.memory_state(memory)
    assert model.pair_state(x, state, num_samples=5) is None  # |M| > K.
    pairs = model.pair_state(x, state, num_samples=7, rows=4)  # Entries 4 + 2.
    assert pairs["q_z"].shape[:2] == (6, 5) and pairs["kl_z"].shape == (6, 5)
    seed = tf.constant([5, 6])
    direct = model.compute_terms(x, memory, 7, seed, state=state, sample_offset=3)
    paired = model.compute_terms(
        x, memory, 7, seed, state=state, sample_offset=3, pairs=pairs
    )
    np.testing.assert_array_equal(paired.addresses, direct.addresses)
    for field in ("log_weights", "log_q_a", "log_q", "kl_a", "kl_z", "recon"):
        np.testing.assert_allclose(
            getattr(paired, field),
            getattr(direct, field),
            rtol=1e-5,
            atol=1e-5,
            err_msg=field,
        )
    # The streamed bound (pairs) equals the direct K-sample bound (no pairs).
    k = 9
    stream = StreamedBound(model, chunk_size=4, jit=False)(x, memory, k, seed=(1, 2))
    terms = model.compute_terms(x, memory, k, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(
        stream["nll_bound"], -estimators.iwae_bound(terms.log_weights), rtol=1e-5
    )
    np.testing.assert_allclose(stream["kl_z"], terms.kl_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stream["recon"], terms.recon, rtol=1e-5)


def test_more_samples_tighten_the_bound_on_average():
    model, x, memory = _model("mnist_recall")
    stream = StreamedBound(model, chunk_size=50)
    small = stream(x, memory, 2, seed=(1, 1))["nll_bound"].mean()
    large = stream(x, memory, 500, seed=(1, 1))["nll_bound"].mean()
    assert large <= small


def test_mean_and_stderr():
    mean, se = mean_and_stderr(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_clustered_stderr():
    values = np.array([1.0, 2.0, 3.0, 7.0])
    # One value per group: the ordinary standard error.
    assert clustered_stderr([v[None] for v in values]) == pytest.approx(
        mean_and_stderr(values)[1], rel=1e-12
    )
    # Groups of identical values: the groups' standard error, not the values'.
    groups = [np.full(5, 1.0), np.full(5, 3.0)]
    assert clustered_stderr(groups) == pytest.approx(1.0, rel=1e-12)
    assert mean_and_stderr(np.concatenate(groups))[1] == pytest.approx(1 / 3, rel=1e-12)
    assert np.isnan(clustered_stderr([values]))


def test_nll_protocol_reports_the_bounds_standard_error_over_batches():
    """Two episodes of 3 targets, each episode's bounds alike (1s, then 3s):
    `nll_bound_by_batch` is the clustered standard error over the two
    batches (1.0), larger than the per-target one (sqrt(6/5) / sqrt(6))."""
    from vma_tf.evaluation import nll_protocol

    bounds = {"test/0": [1.0, 1.0, 1.0], "test/1": [3.0, 3.0, 3.0]}
    cache = lambda name, compute: {
        "nll_bound": bounds[name],
        **{k: [0.0] * 3 for k in ("kl_a", "kl_z", "recon")},
    }
    evals = {"test": [{"x": tf.zeros([3, 2])}, {"x": tf.zeros([3, 2])}]}
    unused = type("Model", (), {"pair_state": None})()  # The cache answers.
    (result,) = nll_protocol(unused, evals, 5, cache=cache).values()
    assert result["nll_bound"]["mean"] == result["nll_bound_by_batch"]["mean"] == 2.0
    assert result["nll_bound"]["stderr"] == pytest.approx(np.sqrt(6 / 5) / np.sqrt(6))
    assert result["nll_bound_by_batch"]["stderr"] == pytest.approx(1.0)
    assert result["num_examples"] == 6


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_nll_protocol_on_a_trained_run(tmp_path):
    import json
    import subprocess
    import sys

    from helpers import tiny

    from vma_tf import training
    from vma_tf.evaluation import nll_protocol
    from vma_tf.experiment import load_run

    config = tiny(steps=20, jit=False, eval_memory_size=32)
    training.train_and_evaluate(config, tmp_path, progress=False)
    _, model, data, step = load_run(tmp_path)
    assert step == 20
    result = nll_protocol(model, data.final_evals, 30, num_examples=10, chunk_size=7)
    assert set(result) == {"test", "test_m32"}
    for split in result.values():
        assert split["num_examples"] == 10 and split["num_samples"] == 30
        for key in ("nll_bound", "kl_a", "kl_z", "recon"):
            assert np.isfinite(split[key]["mean"]) and split[key]["stderr"] >= 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.evaluate",
            f"--workdir={tmp_path}",
            "--num_samples=10",
            "--num_examples=8",
            f"--out={tmp_path / 'ev'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "nll.json").read_text())
    assert report["steps"] == [20] and report["results"]["test"]["num_samples"] == 10


def test_evaluate_needs_a_run(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "launchers.evaluate", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip()
        == f"error: --workdir={tmp_path} has no config.json (not a run)"
    )


def test_evaluate_takes_several_runs_only_for_kl_breakdown(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.evaluate",
            f"--workdir={tmp_path},{tmp_path}",
            "--protocol=nll",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --workdir takes several runs only with --protocol=kl_breakdown"
    )


@pytest.mark.parametrize(
    "preset", ["mnist_recall", "omniglot_fewshot", "omniglot_fewshot_soft", "mnist_vae"]
)
def test_mixed_bfloat16_networks_keep_float32_log_weights(preset):
    """The same weights under `mixed_bfloat16`: bfloat16 networks, float32
    distributions; the bound moves by network rounding only. Samples are
    float32 pixel probabilities too (the exported `images`' dtype)."""
    model, x, memory = _model(preset)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed, _, _ = _model(preset)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy() == previous
    for a, b in zip(mixed.variables, model.variables):
        a.assign(b)
    terms = mixed.compute_terms(x, memory, 3, seed=(1, 2))
    assert terms.log_weights.dtype == tf.float32
    ref = StreamedBound(model, 5, jit=False)(x, memory, 10)
    out = StreamedBound(mixed, 5, jit=False)(x, memory, 10)
    np.testing.assert_allclose(out["nll_bound"], ref["nll_bound"], atol=0.5)
    assert not np.array_equal(out["nll_bound"], ref["nll_bound"])  # bf16 ran
    if isinstance(mixed, VMA):
        images = mixed.sample(tf.constant([0, 1]), memory, seed=(1, 2))
    elif isinstance(mixed, SoftAttentionVAE):
        images = mixed.sample(2, memory, seed=(1, 2))
    else:
        images = mixed.sample(2, seed=(1, 2))
    assert images.dtype == tf.float32 and images.shape[0] == 2


@pytest.mark.parametrize("preset", ["mnist_recall", "omniglot_fewshot"])
def test_duplicated_memory_entries_leave_the_bound_unchanged(preset):
    """M = [m] and M = [m, m, m]: p(a) and q(a|x) split their mass equally
    over copies, so p(a)/q(a|x) and m_a are unchanged sample by sample, and
    the bound is the same to rounding (no |M| = 1 special case; a prior or
    posterior normalised wrongly over entries would break this)."""
    model, x, memory = _model(preset)
    stream = StreamedBound(model, chunk_size=7, jit=False)
    one = stream(x, memory[:1], 7, seed=(1, 2))
    three = stream(x, np.concatenate([memory[:1]] * 3), 7, seed=(1, 2))
    assert np.all(one["kl_a"] == 0)
    np.testing.assert_allclose(three["kl_a"], 0, atol=1e-5)
    np.testing.assert_allclose(three["nll_bound"], one["nll_bound"], rtol=1e-5)


@contextlib.contextmanager
def tf_log_messages():
    """The messages TensorFlow's logger emits inside the block."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = tf.get_logger()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def test_many_memory_sizes_trace_once_each_without_the_retracing_warning():
    """A protocol that varies the memory size (`robustness`) traces the
    per-(entry, target) and chunk functions once per shape, and TensorFlow's
    "frequent retracing" warning (meant for accidental retracing) stays
    quiet; a repeated shape reuses its trace."""
    model, x, memory = _model("mnist_recall")
    stream = StreamedBound(model, chunk_size=20, jit=False)
    with tf_log_messages() as messages:
        sizes = (1, 2, 3, 4, 5, 2)  # TF warns at 5 traces in a row.
        for size in sizes:
            stream(x, np.concatenate([memory] * 2)[:size], 20, seed=(0, size))
    assert not [m for m in messages if "retracing" in m], messages
    assert stream._pairs.traces == 5 and stream._chunk.traces == 5


@pytest.mark.parametrize("preset", ["mnist_recall", "mnist_learned"])
def test_address_health_traces_once_per_model_and_reads_the_current_weights(preset):
    """Training measures q(a|x) on every evaluation split at every
    evaluation: the graph is traced once per model and batch shape (no
    "frequent retracing" warning in a training log), and each call reads the
    weights of that moment (a learned memory's state is an argument, not a
    constant frozen into the first trace)."""
    model, x, memory = _model(preset)
    rng = np.random.default_rng(1)

    def batches(size):
        if memory is None:
            return [{"x": x}, {"x": x[:3]}]
        return [{"x": x, "memory": np.concatenate([memory] * 2)[:size]}] * 2

    def eager(batches):
        health = address_health.AddressHealth(shared_memory=memory is None)
        for batch in batches:
            state = model.address_state(batch.get("memory"))
            q_a, _ = model.address_distributions(batch["x"], state=state)
            health.update(q_a.probs_parameter().numpy(), None)
        return health.result()

    sizes = (6, 12) * 3
    with tf_log_messages() as messages:
        for size in sizes:
            for v in model.trainable_variables:
                v.assign_add(0.3 * rng.normal(size=v.shape).astype(np.float32))
            got = address_health.measure(model, batches(size))
            want = eager(batches(size))
            assert got.keys() == want.keys()
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
    assert not [m for m in messages if "retracing" in m], messages
    traces = address_health._q_probs_function(model).traces
    assert traces == 2, traces  # Two batch shapes (learned) or memory sizes.
