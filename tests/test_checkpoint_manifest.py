"""Checkpoints survive refactors: every preset's fresh training checkpoint
holds exactly the keys, dtypes and shapes recorded in
`tests/golden/checkpoint_manifest.json` (`tools/checkpoint_manifest.py`
re-records it for an intended change)."""

import importlib.util
import json

import pytest

from helpers import REPO
from vma_tf import configs


def _tool():
    spec = importlib.util.spec_from_file_location(
        "checkpoint_manifest", REPO / "tools/checkpoint_manifest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = json.loads((REPO / "tests/golden/checkpoint_manifest.json").read_text())


def test_golden_file_covers_every_preset():
    assert sorted(GOLDEN) == sorted(configs.PRESETS)


@pytest.mark.parametrize("preset", sorted(configs.PRESETS))
def test_checkpoint_keys_and_shapes_match_the_golden_manifest(preset):
    current = _tool().preset_manifest(preset)
    golden = GOLDEN[preset]
    assert sorted(set(golden) - set(current)) == [], "keys gone"
    assert sorted(set(current) - set(golden)) == [], "keys new"
    changed = {k: (golden[k], current[k]) for k in golden if golden[k] != current[k]}
    assert changed == {}
