"""The commands the documents print can be rerun: every `python -m
launchers.NAME` command in README, RESULTS, BENCHMARKS and BUILD names a
launcher that exists and flags it defines (with a value it allows, for an
enum flag or `--preset`); every `make` target, `ROWS=` row and
`python tools/NAME.py` flag exists. A renamed or removed flag fails here, not
for the user who copies a result's command."""

import json
import re
import subprocess
import sys

import pytest
from helpers import REPO

from vma_tf import configs, reproduction

DOCS = ("README.md", "RESULTS.md", "BENCHMARKS.md", "BUILD.md")
# A command runs to the end of its line (a trailing `\` continues it) or to a
# shell operator or the closing backtick of inline code; a `|` inside an
# optional part `[--a=x | --b]` does not end it.
LAUNCHER_COMMAND = re.compile(
    r"python3?\s+-m\s+launchers\.(\w+)((?:\\\n|\[[^\]\n]*\]|[^\n`;|&>)])*)"
)
TOOL_COMMAND = re.compile(r"tools/(\w+)\.py((?:\\\n|\[[^\]\n]*\]|[^\n`;|&>)])*)")
# `make TARGET ... ARGS="..."`: the flags reach this launcher.
MAKE_ARGS = re.compile(
    r"make (train|reproduce|reproduce-report)\b[^`\n]*?ARGS=(\"[^\"]*\"|[^\s`]+)"
)
MAKE_LAUNCHER = {
    "train": "train",
    "reproduce": "reproduce",
    "reproduce-report": "reproduce",
}
FLAG = re.compile(r"(?<![\w-])--([A-Za-z_][\w.]*)(?:=([^\s\]\"']*))?")

# Imports each launcher in turn into a fresh flag registry (each defines its
# flags at import) and prints {launcher: {flag: enum values or null}}.
_LIST_FLAGS = r"""
import importlib, json, pathlib, sys
from absl import flags
out = {}
for path in sorted(pathlib.Path("launchers").glob("*.py")):
    if path.stem in ("__init__", "common"):
        continue
    for name in list(flags.FLAGS):
        delattr(flags.FLAGS, name)
    for module in [m for m in sys.modules if m.startswith("launchers")]:
        del sys.modules[module]
    importlib.import_module(f"launchers.{path.stem}")
    out[path.stem] = {  # (A multi-enum flag's values are not checked.)
        name: None
        if type(f).__name__ == "MultiEnumFlag"
        else sorted(getattr(f.parser, "enum_values", None) or []) or None
        for name, f in flags.FLAGS._flags().items()
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def launcher_flags():
    result = subprocess.run(
        [sys.executable, "-c", _LIST_FLAGS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def _commands(pattern):
    """`(doc:line, name, arguments)` of every match of `pattern` in DOCS."""
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield f"{doc}:{line}", m.group(1), m.group(2)


def _literal(value):
    """A value as typed, not a placeholder (`NAME`, `$X`, `~/dir`, `a|b`...)."""
    return (
        bool(value)
        and not re.fullmatch(r"[A-Z][A-Z0-9_]*", value)
        and not re.search(r"[$~<>{}*|]|\.\.\.|…", value)
    )


def test_command_patterns_read_continuation_lines_and_make_args():
    text = "python -m launchers.train --preset=a \\\n    --steps=5 | tail"
    ((launcher, args),) = LAUNCHER_COMMAND.findall(text)
    assert launcher == "train"
    assert FLAG.findall(args) == [("preset", "a"), ("steps", "5")]
    text = "python -m launchers.train [--a=1 | --b] --c=2 | tail"
    ((_, args),) = LAUNCHER_COMMAND.findall(text)
    assert [n for n, _ in FLAG.findall(args)] == ["a", "b", "c"]
    ((target, args),) = MAKE_ARGS.findall('make reproduce ROWS=x ARGS="--a=1 --b"')
    assert target == "reproduce" and [n for n, _ in FLAG.findall(args)] == ["a", "b"]
    # Unquoted at the end of a code span: the backtick is not the value's.
    ((_, args),) = MAKE_ARGS.findall("(`make reproduce ARGS=--a=float32`).")
    assert FLAG.findall(args) == [("a", "float32")]


def test_documented_launcher_commands_use_flags_that_exist(launcher_flags):
    commands = list(_commands(LAUNCHER_COMMAND))
    assert len(commands) > 100  # The pattern still finds them.
    commands += [
        (where, MAKE_LAUNCHER[target], args)
        for where, target, args in _commands(MAKE_ARGS)
    ]
    bad = []
    for where, launcher, args in commands:
        if launcher not in launcher_flags:
            bad.append(f"{where}: no launcher {launcher!r}")
            continue
        defined = launcher_flags[launcher]
        for name, value in FLAG.findall(args):
            if name not in defined and not (
                name.startswith("no") and name[2:] in defined
            ):
                bad.append(f"{where}: launchers.{launcher} has no --{name}")
            elif _literal(value) and defined.get(name) and value not in defined[name]:
                bad.append(f"{where}: --{name}={value} is not one of {defined[name]}")
            elif name == "preset" and _literal(value) and value not in configs.PRESETS:
                bad.append(f"{where}: no preset {value!r}")
    assert not bad, "\n".join(bad)


def _tool_flags(source):
    """The `--flags` a tool's argparse parser defines."""
    return set(re.findall(r"add_argument\(\s*\"--([\w.]+)\"", source))


def test_tool_flags_are_read_from_argparse_definitions():
    source = 'p.add_argument("--run", action="append")\nx = "--out"\n'
    assert _tool_flags(source) == {"run"}


def test_documented_make_targets_rows_and_tool_flags_exist(launcher_flags):
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    bad = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for m in re.finditer(r"(?:^|`|\$ )make ([a-z][\w-]*)", text, re.MULTILINE):
            if m.group(1) not in targets:
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{doc}:{line}: no make target {m.group(1)!r}")
        for m in re.finditer(r"ROWS=([\w,]+)", text):
            for row in m.group(1).split(","):
                if row not in reproduction.ROWS_BY_NAME:
                    line = text.count("\n", 0, m.start()) + 1
                    bad.append(f"{doc}:{line}: no reproduce row {row!r}")
    for where, tool, args in _commands(TOOL_COMMAND):
        path = REPO / "tools" / f"{tool}.py"
        if not path.exists():
            bad.append(f"{where}: no tools/{tool}.py")
            continue
        source = path.read_text()
        defined = _tool_flags(source)
        if "parse_known_args" in source:  # The rest goes to launchers.train.
            defined |= set(launcher_flags["train"])
        for name, _ in FLAG.findall(args):
            if name not in defined:
                bad.append(f"{where}: tools/{tool}.py has no --{name}")
    assert not bad, "\n".join(bad)
