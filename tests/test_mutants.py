"""The mutation harness's table stays in step with the code: every planted
bug's snippet occurs exactly once in its file and every test meant to catch
it exists (`tools/mutants.py` runs the mutants themselves, on demand)."""

import ast

from helpers import REPO, load_tool


def _test_names(path):
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_mutant_applies_once_and_names_existing_tests():
    mutants = load_tool("mutants").MUTANTS
    assert len(mutants) >= 11
    assert len({m.name for m in mutants}) == len(mutants)
    for m in mutants:
        text = (REPO / m.file).read_text()
        assert text.count(m.original) == 1, (m.name, m.file)
        assert m.replacement != m.original and m.tests, m.name
        for node in m.tests:
            file, _, test = node.partition("::")
            name = test.split("[")[0]
            assert name in _test_names(REPO / file), (m.name, node)
