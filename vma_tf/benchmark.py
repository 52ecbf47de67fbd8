"""Throughput, compile time, peak memory and FLOP utilisation of a preset.

`run_benchmark(config, memory_sizes)` measures, in this process:

* the fp32 matmul rate of the machine (a large XLA `tf.matmul`), the
  reference for FLOP utilisation;
* per memory size: the compile time and the median wall time of the
  optimiser step (`model.train_step` under `tf.function(jit_compile=...)`,
  the function Keras' `fit` runs), steps/s, examples/s, the step's FLOP count
  read from its XLA HLO (`hlo_flops`), the achieved FLOP/s and its ratio to
  the matmul rate, and the process' peak RSS;
* evaluation throughput: importance samples per second of the streamed K =
  `eval_samples` bound (`evaluation.StreamedBound`);
* the input pipeline's batches/s (it must be far above steps/s).

Steps run on synthetic inputs of the preset's shapes (random binary images),
so any |M| can be measured, also beyond what the episode sizes of the preset
give; the work of a step does not depend on pixel values.

FLOPs count the multiply-adds of `dot` and `convolution` instructions (2 per
multiply-add; padding and dilation holes excluded), i.e. the matmul-class work
that the matmul rate measures; element-wise work is not counted, so the
utilisation is a lower bound.

Useful FLOPs only: with `fast_convs` the step runs stride-2 and transposed
convolutions as dense convolutions on space-to-depth rearrangements whose
kernels contain structural zeros (7 of 16 taps), which the HLO counter cannot
tell apart from real ones. `flops_per_step` (and the utilisation) therefore
come from the same step built with `fast_convs=False` (Keras' layers, the
same function), and `executed_flops_per_step` from the timed graph itself.

With `jit=False` the step runs TF's own kernels (oneDNN on CPU) and has no
HLO of its own; its FLOPs are counted on the XLA lowering of the same
`train_step` (compiled for counting only, never run): the same function, so
the same useful work.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from vma_tf.configs import Config
from vma_tf.configs import x_shape as _x_shape

# --------------------------------------------------------------------------
# FLOPs from HLO text.

_SHAPE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\(?(\w+)\[([\d,]*)\]")
_OPERANDS = re.compile(r"\b(dot|convolution)\((.*?)\)(?:,|$)")


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def _operand_shapes(args: str, shapes: dict[str, list[int]]) -> list[list[int]]:
    """Shapes of an instruction's operands, typed inline or by name."""
    out = []
    for part in args.split(", "):
        typed = re.match(r"\s*\w+\[([\d,]*)\]", part)
        if typed:
            out.append(_dims(typed.group(1)))
            continue
        name = part.strip().lstrip("%")
        if name not in shapes:
            raise ValueError(f"HLO operand {name!r} has no known shape")
        out.append(shapes[name])
    return out


def _braced(line: str, key: str) -> str | None:
    match = re.search(rf"\b{key}=\{{([^}}]*)\}}", line)
    return match.group(1) if match else None


def _dot_flops(line: str, out: list[int], lhs: list[int]) -> int:
    contracting = _dims(_braced(line, "lhs_contracting_dims") or "")
    k = math.prod(lhs[d] for d in contracting)
    return 2 * math.prod(out) * k


def _valid_taps(n, k, stride, lo, hi, lhs_dilate, rhs_dilate, out_size) -> int:
    """(output position, kernel tap) pairs of one spatial dim that read a real
    input element (not padding, not a hole of the input's dilation)."""
    del hi
    span = (n - 1) * lhs_dilate
    count = 0
    for p in range(out_size):
        for j in range(k):
            idx = p * stride + j * rhs_dilate - lo
            if 0 <= idx <= span and idx % lhs_dilate == 0:
                count += 1
    return count


def _conv_flops(line: str, out: list[int], lhs: list[int], rhs: list[int]) -> int:
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line)
    if not labels:
        raise ValueError(f"convolution without dim_labels: {line[:120]}")
    lhs_l, rhs_l, out_l = labels.groups()
    window = _braced(line, "window") or ""
    fields = dict(item.split("=", 1) for item in window.split() if "=" in item)
    spatial = [c for c in out_l if c.isdigit()]
    per = lambda key, default: (
        [int(v) for v in fields[key].split("x")]
        if key in fields
        else [default] * len(spatial)
    )
    sizes = per("size", 1)
    strides = per("stride", 1)
    lhs_dil = per("lhs_dilate", 1)
    rhs_dil = per("rhs_dilate", 1)
    pads = (
        [tuple(int(v) for v in p.split("_")) for p in fields["pad"].split("x")]
        if "pad" in fields
        else [(0, 0)] * len(spatial)
    )
    taps = 1
    for i, d in enumerate(spatial):
        taps *= _valid_taps(
            lhs[lhs_l.index(d)],
            sizes[i],
            strides[i],
            pads[i][0],
            pads[i][1],
            lhs_dil[i],
            rhs_dil[i],
            out[out_l.index(d)],
        )
    batch = out[out_l.index("b")]
    features = out[out_l.index("f")]
    in_per_group = rhs[rhs_l.index("i")]
    return 2 * batch * features * in_per_group * taps


def hlo_flops(hlo: str) -> dict[str, int]:
    """Counts matmul-class FLOPs in HLO text.

    Args:
        hlo: HLO module text (`experimental_get_compiler_ir(...)(stage="hlo")`).

    Returns:
        `{"dot": flops, "convolution": flops, "total": flops}`; a multiply-add
        counts 2; convolution taps on padding or dilation holes are excluded.
    """
    shapes: dict[str, list[int]] = {}
    totals = {"dot": 0, "convolution": 0}
    for line in hlo.splitlines():
        head = _SHAPE.match(line)
        if not head:
            continue
        name, _, dims = head.groups()
        out = _dims(dims)
        shapes[name] = out
        op = _OPERANDS.search(line.split("=", 1)[1])
        if not op or f" {op.group(1)}(" not in line:
            continue
        kind = op.group(1)
        operands = _operand_shapes(op.group(2), shapes)
        if kind == "dot":
            totals["dot"] += _dot_flops(line, out, operands[0])
        else:
            totals["convolution"] += _conv_flops(line, out, *operands[:2])
    totals["total"] = totals["dot"] + totals["convolution"]
    return totals


def compiled_flops(fn, *args) -> dict[str, int]:
    """`hlo_flops` of a `tf.function(jit_compile=True)` for these arguments."""
    return hlo_flops(fn.experimental_get_compiler_ir(*args)(stage="hlo"))


# --------------------------------------------------------------------------
# Timing.


def peak_rss_bytes() -> int:
    """This process' peak resident set (VmHWM; Linux), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _block(result) -> None:
    for t in tf.nest.flatten(result):
        if hasattr(t, "numpy"):
            t.numpy()


def time_calls(fn, args, steps: int, warmup: int) -> dict[str, float]:
    """Times `fn(*args)`: first call (trace + compile + run), then `warmup`
    untimed calls, then `steps` timed ones, each waited for.

    Returns:
        `first_sec`, `median_sec`, `min_sec`, `times_sec` (list).
    """
    t0 = time.perf_counter()
    _block(fn(*args))
    first = time.perf_counter() - t0
    for _ in range(warmup):
        _block(fn(*args))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _block(fn(*args))
        times.append(time.perf_counter() - t0)
    return {
        "first_sec": first,
        "median_sec": float(np.median(times)),
        "min_sec": float(np.min(times)),
        "times_sec": times,
    }


def matmul_rate(n: int = 2048, steps: int = 10, jit: bool = True) -> dict[str, Any]:
    """Measured fp32 FLOP/s of an `[n, n] @ [n, n]` XLA matmul (median)."""
    a = tf.random.stateless_uniform([n, n], seed=(1, 2))
    b = tf.random.stateless_uniform([n, n], seed=(3, 4))
    fn = tf.function(tf.matmul, jit_compile=jit)
    timing = time_calls(fn, (a, b), steps, warmup=2)
    flops = 2 * n**3
    return {
        "n": n,
        "median_ms": 1e3 * timing["median_sec"],
        "flops_per_sec": flops / timing["median_sec"],
    }


# --------------------------------------------------------------------------
# Model steps.


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


def benchmark_step(
    config: Config,
    memory_size: int,
    steps: int = 20,
    warmup: int = 3,
    eval_samples: int = 1000,
    eval_chunk: int = 100,
    matmul_flops_per_sec: float | None = None,
) -> dict[str, Any]:
    """Measures one memory size (see the module docstring).

    Returns:
        A flat dict: `memory_size`, `compile_sec`, `ms_per_step`,
        `steps_per_sec`, `examples_per_sec`, `flops_per_step`,
        `flops_per_sec`, `flop_utilisation`, `eval_samples_per_sec`,
        `peak_rss_mb`.
    """
    from vma_tf.evaluation import StreamedBound
    from vma_tf.experiment import build_model

    config = _with_memory_size(config, memory_size)
    batch = synthetic_batch(config, memory_size)
    model = build_model(config, _x_shape(config), batch)
    step = tf.function(model.train_step, jit_compile=config.train.jit)
    timing = time_calls(step, (batch,), steps, warmup)
    # FLOPs are counted on the XLA lowering of the same step, also when the
    # timed step runs TF's own (oneDNN) kernels (`jit=False`); with
    # `fast_convs` on the reference layers (no taps on zeros).
    counted = step
    if not config.train.jit:
        counted = tf.function(model.train_step, jit_compile=True)
    flops = executed = compiled_flops(counted, batch)
    if config.model.architecture == "conv" and config.model.fast_convs:
        reference = build_model(
            dataclasses.replace(
                config, model=dataclasses.replace(config.model, fast_convs=False)
            ),
            _x_shape(config),
            batch,
        )
        flops = compiled_flops(
            tf.function(reference.train_step, jit_compile=True), batch
        )
    result = {
        "memory_size": memory_size,
        "compile_sec": timing["first_sec"] - timing["median_sec"],
        "ms_per_step": 1e3 * timing["median_sec"],
        "steps_per_sec": 1.0 / timing["median_sec"],
        "examples_per_sec": config.train.batch_size / timing["median_sec"],
        "flops_per_step": flops["total"] if flops else None,
        "executed_flops_per_step": executed["total"] if executed else None,
        "flops_per_sec": flops["total"] / timing["median_sec"] if flops else None,
        "flop_utilisation": (
            flops["total"] / timing["median_sec"] / matmul_flops_per_sec
            if flops and matmul_flops_per_sec
            else None
        ),
    }
    if eval_samples:
        bound = StreamedBound(model, chunk_size=eval_chunk, jit=config.train.jit)
        args = (batch["x"], batch.get("memory"))
        bound(*args, num_samples=eval_samples)  # Compiles.
        t0 = time.perf_counter()
        bound(*args, num_samples=eval_samples)
        wall = time.perf_counter() - t0
        result["eval_samples_per_sec"] = eval_samples * len(batch["x"]) / wall
    result["peak_rss_mb"] = peak_rss_bytes() / 2**20
    return result


def input_rate(config: Config, batches: int = 50) -> float:
    """Batches/s of the preset's real training pipeline (after the first)."""
    from vma_tf.data.experiments import make_data

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
    import keras

    from vma_tf.modeling.builders import dtype_policy_scope

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


def conv_layer_timings(
    batch: int = 128, channels: int = 64, steps: int = 15
) -> list[dict[str, Any]]:
    """Forward+backward ms of each stride-2 / transposed conv of the Omniglot
    nets, Keras' layer against its `fast_convs` form, under XLA (median).

    Returns:
        Rows `{"layer", "input_shape", "keras_ms", "fast_ms"}`.
    """
    from vma_tf.modeling import conv

    cases = [
        ("transposed conv 13 -> 26", 13, conv.SubPixelConv2DTranspose),
        ("transposed conv 7 -> 14", 7, conv.SubPixelConv2DTranspose),
        ("transposed conv 4 -> 8", 4, conv.SubPixelConv2DTranspose),
        ("stride-2 conv 26 -> 13", 26, conv.StridedConv2D),
        ("stride-2 conv 13 -> 7", 13, conv.StridedConv2D),
        ("stride-2 conv 7 -> 4", 7, conv.StridedConv2D),
    ]
    rows = []
    for name, size, cls in cases:
        shape = (batch, size, size, channels)
        x = tf.random.stateless_normal(shape, seed=(1, 2))
        row = {"layer": name, "input_shape": list(shape)}
        for fast in (False, True):
            layer = cls(channels, fast=fast)
            layer.build(shape)

            def fwd_bwd(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(tf.square(layer(x)))
                return tape.gradient(loss, [x, *layer.trainable_variables])

            fn = tf.function(fwd_bwd, jit_compile=True)
            timing = time_calls(fn, (x,), steps, warmup=2)
            row["fast_ms" if fast else "keras_ms"] = 1e3 * timing["median_sec"]
        rows.append(row)
    return rows


def format_conv_layers(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'layer (XLA, fwd+bwd)':<28} {'input':>18} {'Keras ms':>9} {'fast ms':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r['layer']:<28} {str(tuple(r['input_shape'])):>18} "
            f"{r['keras_ms']:>9.1f} {r['fast_ms']:>9.1f}"
        )
    return "\n".join(lines)


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
