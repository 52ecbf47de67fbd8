"""Timing helpers: wall time of calls, the machine's matmul rate, peak RSS."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import tensorflow as tf


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
