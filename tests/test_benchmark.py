"""The benchmark's FLOP counter (exact) and a smoke run of its launcher.

No timing is asserted anywhere: numbers come from `launchers.benchmark`.
"""

import json
import subprocess
import sys

import pytest
import tensorflow as tf

from helpers import run_launcher

from vma_tf import benchmark


def _conv_step(x, k, strides, padding):
    @tf.function(jit_compile=True)
    def f(x, k):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = tf.nn.conv2d(x, k, strides, padding)
            loss = tf.reduce_sum(y**2)
        return tape.gradient(loss, [x, k])

    return benchmark.compiled_flops(f, x, k)


def test_dot_flops_are_two_m_n_k():
    f = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
    flops = benchmark.compiled_flops(f, tf.ones([4, 7, 3]), tf.ones([4, 3, 5]))
    assert flops == {"dot": 2 * 4 * 7 * 3 * 5, "convolution": 0, "total": 840}


def test_conv_forward_and_both_gradients_count_the_same_multiply_adds():
    # VALID, stride 2: 12 x 12 outputs, 3 x 3 x 3 taps each, 5 features.
    forward = 2 * 2 * 12 * 12 * 5 * (3 * 3 * 3)
    flops = _conv_step(tf.ones([2, 26, 26, 3]), tf.ones([3, 3, 3, 5]), 2, "VALID")
    # The input gradient's dilation holes and the padding are not counted.
    assert flops["convolution"] == 3 * forward and flops["dot"] == 0


def test_conv_taps_on_padding_are_not_counted():
    # SAME, stride 1, 4 x 4, 3 x 3 kernel: 2 + 3 + 3 + 2 = 10 taps per dim.
    forward = 2 * 1 * 6 * 2 * (10 * 10)
    flops = _conv_step(tf.ones([1, 4, 4, 2]), tf.ones([3, 3, 2, 6]), 1, "SAME")
    assert flops["convolution"] == 3 * forward


def test_matmul_rate_reports_flops_per_second():
    rate = benchmark.matmul_rate(n=64, steps=2)
    assert rate["n"] == 64 and rate["flops_per_sec"] > 0


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_benchmark_launcher_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.benchmark",
            "--preset=mnist_recall",
            "--memory_sizes=8,16",
            "--steps=2",
            "--warmup=0",
            "--eval_samples=4",
            "--input_batches=2",
            f"--json={out}",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["memory_size"] for r in report["rows"]] == [8, 16]
    small, large = report["rows"]
    # More memory entries: more per-entry work in the same step.
    assert large["flops_per_step"] > small["flops_per_step"] > 0
    for row in report["rows"]:
        assert 0 < row["flop_utilisation"] and row["peak_rss_mb"] > 0
        assert row["eval_samples_per_sec"] > 0 and row["compile_sec"] >= 0
    assert report["input_batches_per_sec"] > 0
    assert "ms/step" in proc.stdout and "|M|" in proc.stdout


def test_conv_layers_launcher_reads_channels_steps_and_json(tmp_path):
    """`--conv_layers` times the six convs with --channels maps and writes
    its rows to --json (it used to ignore both)."""
    out = tmp_path / "conv.json"
    args = ["--conv_layers", "--channels=4", "--steps=2", "--warmup=0", f"--json={out}"]
    proc = run_launcher("benchmark", args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["conv_layers"]
    assert len(rows) == 6 and "Keras ms" in proc.stdout
    assert all(r["input_shape"][-1] == 4 for r in rows)
    assert all(r["keras_ms"] > 0 and r["fast_ms"] > 0 for r in rows)
