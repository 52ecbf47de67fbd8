"""What the machine's CPU offers the `mixed_bfloat16` policy (no TensorFlow
import).

TensorFlow runs bfloat16 matmuls and convolutions natively only on CPUs with
bfloat16 instructions (x86: AVX512_BF16 or AMX; Arm: BF16). Elsewhere it
emulates them, and `mixed_bfloat16` is several times *slower* than float32
(BENCHMARKS.md "bfloat16 on a CPU without bfloat16 instructions"). Linux names
the instructions in /proc/cpuinfo's `flags` (x86) or `Features` (Arm) lines.
"""

from __future__ import annotations

import os
import pathlib

# /proc/cpuinfo's names of the instructions that run bfloat16 natively.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has bfloat16 instructions (`BF16_CPU_FLAGS`).

    Args:
        cpuinfo: the file listing the CPU's flags (Linux's /proc/cpuinfo).

    Returns:
        True or False from its `flags` / `Features` lines; None where it
        cannot tell (no such file, or no such line: another OS).
    """
    try:
        text = pathlib.Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    words: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words.update(value.split())
    return bool(words & BF16_CPU_FLAGS) if words else None


def emulated_bf16_warning(
    precision: str, gpus: int, cpuinfo: str | os.PathLike = "/proc/cpuinfo"
) -> str | None:
    """The one-line warning for `precision` on this machine, or None.

    Args:
        precision: `TrainConfig.precision` (`"float32"`, `"mixed_bfloat16"`).
        gpus: the number of GPUs TensorFlow sees (bfloat16 runs there).
        cpuinfo: as in `cpu_has_bf16`.

    Returns:
        A warning if `precision` is `mixed_bfloat16`, no GPU is seen and the
        CPU has no bfloat16 instructions; None otherwise (also when it
        cannot tell).
    """
    if precision != "mixed_bfloat16" or gpus or cpu_has_bf16(cpuinfo) is not False:
        return None
    return (
        "warning: --precision=mixed_bfloat16 on a CPU without bfloat16 "
        "instructions (none of avx512_bf16, amx_bf16, bf16 in /proc/cpuinfo): "
        "TensorFlow emulates it, several times slower than float32 "
        "(BENCHMARKS.md); give --precision=float32 "
        "(--config.train.precision=float32)"
    )
