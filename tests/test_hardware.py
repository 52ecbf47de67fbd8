"""`vma_tf.hardware`: whether this CPU runs bfloat16 natively, read from
/proc/cpuinfo, and the warning `builders.dtype_policy_scope` prints once when
`mixed_bfloat16` would be emulated (several times slower than float32)."""

import pytest

from vma_tf import hardware
from vma_tf.modeling import builders

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma{}\nbugs\t\t: none\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve{}\n"


@pytest.mark.parametrize(
    "text,expected",
    [
        (X86.format(""), False),
        (X86.format(" avx512f avx512_bf16"), True),
        (X86.format(" amx_bf16 amx_tile"), True),
        (X86.format(" avx512bw"), False),  # AVX-512 alone has no bfloat16.
        (ARM.format(""), False),
        (ARM.format(" bf16 i8mm"), True),
        ("processor\t: 0\nmodel name\t: ?\n", None),  # No flags line.
        ("", None),
    ],
)
def test_cpu_flags_decide_bf16(tmp_path, text, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert hardware.cpu_has_bf16(path) is expected


def test_warning_only_for_emulated_bf16(tmp_path):
    without, with_bf16 = tmp_path / "a", tmp_path / "b"
    without.write_text(X86.format(""))
    with_bf16.write_text(X86.format(" avx512_bf16"))
    message = hardware.emulated_bf16_warning("mixed_bfloat16", 0, without)
    assert message.startswith("warning: --precision=mixed_bfloat16 on a CPU without")
    assert message.endswith("(--config.train.precision=float32)")
    assert "give --precision=float32" in message and "\n" not in message
    assert hardware.emulated_bf16_warning("float32", 0, without) is None
    assert hardware.emulated_bf16_warning("mixed_bfloat16", 1, without) is None
    assert hardware.emulated_bf16_warning("mixed_bfloat16", 0, with_bf16) is None
    missing = tmp_path / "none"
    assert hardware.emulated_bf16_warning("mixed_bfloat16", 0, missing) is None


def test_policy_scope_warns_once_per_process(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda cpuinfo=None: False)
    # As on a CPU-only machine (a GPU runs bfloat16: no warning there).
    monkeypatch.setattr(builders.tf.config, "list_physical_devices", lambda kind: [])
    builders._warn_if_emulated.cache_clear()
    try:
        with builders.dtype_policy_scope("float32"):
            pass
        assert capsys.readouterr().err == ""
        for _ in range(2):
            with builders.dtype_policy_scope("mixed_bfloat16"):
                pass
        err = capsys.readouterr().err
        assert err.count("warning: --precision=mixed_bfloat16") == 1
    finally:
        builders._warn_if_emulated.cache_clear()
