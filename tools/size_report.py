"""Module and function sizes of the library and launchers (issue 16's limits).

  python tools/size_report.py [--max_module=450] [--max_function=60]

Prints every module's line count (largest first) and any function over the
limit in code lines (non-blank, non-comment lines, docstring excluded); exits
1 if a limit is exceeded.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def code_lines(node: ast.AST, lines: list[str]) -> int:
    """Non-blank, non-comment lines of a function, without its docstring."""
    skip = (0, -1)
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    ):
        if isinstance(body[0].value.value, str):
            skip = (body[0].lineno, body[0].end_lineno)
    return sum(
        1
        for i in range(node.lineno, node.end_lineno + 1)
        if not skip[0] <= i <= skip[1]
        and lines[i - 1].strip()
        and not lines[i - 1].strip().startswith("#")
    )


def sizes(roots=("vma_tf", "launchers")):
    """`(modules, functions)`: `[(lines, path)]` and `[(code lines, name)]`."""
    modules, functions = [], []
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            text = path.read_text()
            lines = text.splitlines()
            rel = path.relative_to(REPO)
            modules.append((len(lines), str(rel)))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions.append((code_lines(node, lines), f"{rel}::{node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_module", type=int, default=450)
    parser.add_argument("--max_function", type=int, default=60)
    args = parser.parse_args()
    modules, functions = sizes()
    for count, name in modules:
        print(f"{count:5d}  {name}")
    over = [(n, m) for n, m in modules if n > args.max_module]
    long = [(n, f) for n, f in functions if n > args.max_function]
    print(f"largest function: {functions[0][0]} code lines ({functions[0][1]})")
    for n, f in long:
        print(f"over {args.max_function}: {f} ({n} code lines)")
    print(
        f"{len(modules)} modules, {len(over)} over {args.max_module} lines; "
        f"{len(functions)} functions, {len(long)} over {args.max_function} code lines"
    )
    return 1 if over or long else 0


if __name__ == "__main__":
    sys.exit(main())
