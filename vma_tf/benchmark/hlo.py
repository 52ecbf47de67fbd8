"""Matmul-class FLOPs counted in XLA HLO text (`hlo_flops`, `compiled_flops`).

FLOPs count the multiply-adds of `dot` and `convolution` instructions (2 per
multiply-add; padding and dilation holes excluded); element-wise work is not
counted.
"""

from __future__ import annotations

import math
import re

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
