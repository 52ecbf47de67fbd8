"""Checkpoints survive refactors: every preset's (and the long runs' variants')
fresh training checkpoint
holds exactly the keys, dtypes and shapes recorded in
`tests/golden/checkpoint_manifest.json` (`tools/checkpoint_manifest.py`
re-records it for an intended change)."""

import json

import pytest
from helpers import load_tool

from vma_tf import configs

TOOL = load_tool("checkpoint_manifest")
GOLDEN = json.loads(TOOL.GOLDEN.read_text())


def test_golden_file_covers_every_preset_and_variant():
    assert set(configs.PRESETS) <= set(TOOL.names())
    assert sorted(GOLDEN) == TOOL.names()


@pytest.mark.parametrize("preset", TOOL.names())
def test_checkpoint_keys_and_shapes_match_the_golden_manifest(preset):
    current = TOOL.preset_manifest(preset)
    golden = GOLDEN[preset]
    assert sorted(set(golden) - set(current)) == [], "keys gone"
    assert sorted(set(current) - set(golden)) == [], "keys new"
    changed = {k: (golden[k], current[k]) for k in golden if golden[k] != current[k]}
    assert changed == {}
