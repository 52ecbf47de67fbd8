"""Benchmark of a preset's training step per memory size (`run_benchmark`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from vma_tf.benchmark.hlo import compiled_flops
from vma_tf.benchmark.timing import matmul_rate, peak_rss_bytes, time_calls
from vma_tf.configs import Config
from vma_tf.configs import x_shape as _x_shape
from vma_tf.data.experiments import make_data
from vma_tf.evaluation import StreamedBound
from vma_tf.experiment import build_model
from vma_tf.modeling.builders import dtype_policy_scope


def synthetic_batch(config: Config, memory_size: int, seed: int = 0) -> dict:
    """`{"x": [B, *x], "memory": [|M|, *x]}` random binary images (no memory
    for VAEs and learned memory)."""
    shape = _x_shape(config)
    rng = np.random.default_rng(seed)
    batch = {
        "x": (rng.random((config.train.batch_size, *shape)) < 0.3).astype(np.float32)
    }
    m = config.model
    if m.kind != "vae" and m.memory == "episodic":
        batch["memory"] = (rng.random((memory_size, *shape)) < 0.3).astype(np.float32)
    return {k: tf.constant(v) for k, v in batch.items()}


def _with_memory_size(config: Config, memory_size: int) -> Config:
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, memory_size=memory_size)
    )


def _useful_flops(config: Config, model, step, batch) -> tuple[dict, dict]:
    """`(useful, executed)` FLOP counts of the step (see the package doc).

    FLOPs are counted on the XLA lowering of the same step, also when the
    timed step runs TF's own (oneDNN) kernels (`jit=False`); with
    `fast_convs`, the useful ones on the reference layers (no taps on zeros).
    """
    counted = step
    if not config.train.jit:
        counted = tf.function(model.train_step, jit_compile=True)
    executed = compiled_flops(counted, batch)
    if not (config.model.architecture == "conv" and config.model.fast_convs):
        return executed, executed
    reference = build_model(
        dataclasses.replace(
            config, model=dataclasses.replace(config.model, fast_convs=False)
        ),
        _x_shape(config),
        batch,
    )
    useful = compiled_flops(tf.function(reference.train_step, jit_compile=True), batch)
    return useful, executed


def _eval_rate(config: Config, model, batch, samples: int, chunk: int) -> float:
    """Importance samples per second of the streamed K = `samples` bound."""
    bound = StreamedBound(model, chunk_size=chunk, jit=config.train.jit)
    args = (batch["x"], batch.get("memory"))
    bound(*args, num_samples=samples)  # Compiles.
    t0 = time.perf_counter()
    bound(*args, num_samples=samples)
    wall = time.perf_counter() - t0
    return samples * len(batch["x"]) / wall


def benchmark_step(
    config: Config,
    memory_size: int,
    steps: int = 20,
    warmup: int = 3,
    eval_samples: int = 1000,
    eval_chunk: int = 100,
    matmul_flops_per_sec: float | None = None,
) -> dict[str, Any]:
    """Measures one memory size (see the package docstring).

    Returns:
        A flat dict: `memory_size`, `compile_sec`, `ms_per_step`,
        `steps_per_sec`, `examples_per_sec`, `flops_per_step`,
        `executed_flops_per_step`, `flops_per_sec`, `flop_utilisation`,
        `eval_samples_per_sec` (if `eval_samples`), `peak_rss_mb`.
    """
    config = _with_memory_size(config, memory_size)
    batch = synthetic_batch(config, memory_size)
    model = build_model(config, _x_shape(config), batch)
    step = tf.function(model.train_step, jit_compile=config.train.jit)
    timing = time_calls(step, (batch,), steps, warmup)
    flops, executed = _useful_flops(config, model, step, batch)
    median = timing["median_sec"]
    result = {
        "memory_size": memory_size,
        "compile_sec": timing["first_sec"] - median,
        "ms_per_step": 1e3 * median,
        "steps_per_sec": 1.0 / median,
        "examples_per_sec": config.train.batch_size / median,
        "flops_per_step": flops["total"] if flops else None,
        "executed_flops_per_step": executed["total"] if executed else None,
        "flops_per_sec": flops["total"] / median if flops else None,
        "flop_utilisation": (
            flops["total"] / median / matmul_flops_per_sec
            if flops and matmul_flops_per_sec
            else None
        ),
    }
    if eval_samples:
        result["eval_samples_per_sec"] = _eval_rate(
            config, model, batch, eval_samples, eval_chunk
        )
    result["peak_rss_mb"] = peak_rss_bytes() / 2**20
    return result


def input_rate(config: Config, batches: int = 50) -> float:
    """Batches/s of the preset's real training pipeline (after the first)."""
    iterator = iter(make_data(config).train(0))
    next(iterator)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - t0)


def run_benchmark(
    config: Config,
    memory_sizes: Sequence[int] = (),
    steps: int = 20,
    warmup: int = 3,
    eval_samples: int = 1000,
    input_batches: int = 50,
    dtype_policy: str | None = None,
) -> dict[str, Any]:
    """Matmul rate, every memory size (default: the preset's), input rate.

    `dtype_policy` (e.g. `"mixed_bfloat16"`) is the Keras policy the models
    are built under (None: the global one).

    Returns:
        `{"preset", "config", "matmul", "rows": [benchmark_step(...)],
        "input_batches_per_sec", "device"}`.
    """
    matmul = matmul_rate()
    sizes = list(memory_sizes) or [config.model.memory_size]
    with dtype_policy_scope(dtype_policy):
        rows = [
            benchmark_step(
                config,
                size,
                steps=steps,
                warmup=warmup,
                eval_samples=eval_samples,
                matmul_flops_per_sec=matmul["flops_per_sec"],
            )
            for size in sizes
        ]
    return {
        "preset": config.name,
        "config": config.to_dict(),
        "matmul": matmul,
        "rows": rows,
        "input_batches_per_sec": input_rate(config, input_batches)
        if input_batches
        else None,
        "device": [d.device_type for d in tf.config.list_logical_devices()],
        "dtype_policy": dtype_policy or keras.config.dtype_policy().name,
    }


def format_table(report: dict[str, Any]) -> str:
    """One table: a row per memory size."""
    mm = report["matmul"]
    lines = [
        (
            f"{report['preset']} ({report.get('dtype_policy', 'float32')}, "
            f"fast_convs={report['config']['model']['fast_convs']}): fp32 matmul {mm['n']}^3 "
            f"{mm['flops_per_sec'] / 1e9:.1f} GFLOP/s ({mm['median_ms']:.1f} ms)"
        ),
        (
            f"{'|M|':>7} {'compile s':>9} {'ms/step':>9} {'steps/s':>8} {'ex/s':>8} "
            f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'util':>6} {'eval IS/s':>10} "
            f"{'peak MB':>8}"
        ),
    ]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    for r in report["rows"]:
        lines.append(
            f"{r['memory_size']:>7} {r['compile_sec']:>9.1f} {r['ms_per_step']:>9.1f} "
            f"{r['steps_per_sec']:>8.2f} {r['examples_per_sec']:>8.1f} "
            f"{fmt(r['flops_per_step'] and r['flops_per_step'] / 1e9, '>10.3f')} "
            f"{fmt(r['flops_per_sec'] and r['flops_per_sec'] / 1e9, '>8.1f')} "
            f"{fmt(r['flop_utilisation'] and 100 * r['flop_utilisation'], '>5.1f')}% "
            f"{fmt(r.get('eval_samples_per_sec'), '>10.0f')} "
            f"{r['peak_rss_mb']:>8.0f}"
        )
    if report.get("input_batches_per_sec"):
        lines.append(f"input pipeline: {report['input_batches_per_sec']:.1f} batches/s")
    return "\n".join(lines)


def format_precision_ratios(reports: Sequence[dict[str, Any]]) -> str:
    """ms/step of the first report over each other's, per memory size (> 1:
    the other precision is faster). The reports time the same sizes."""
    base = reports[0]
    lines = []
    for other in reports[1:]:
        for b, o in zip(base["rows"], other["rows"]):
            lines.append(
                f"|M| = {b['memory_size']}: train ms/step {base['dtype_policy']} / "
                f"{other['dtype_policy']} = {b['ms_per_step']:.1f} / "
                f"{o['ms_per_step']:.1f} = {b['ms_per_step'] / o['ms_per_step']:.2f}x"
            )
    return "\n".join(lines)
