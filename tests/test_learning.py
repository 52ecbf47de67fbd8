"""Regression tests: the model learns the way the paper says (issue
"Learn like the paper"). Small, seeded, deterministic runs of the presets'
defaults; each failed on the code before the fix (untied embedders: q puts
no more than uniform mass on the own slot; learned memory: one slot is the
mode of every target within a few hundred steps).
"""

import json

import pytest

from vma_tf import configs, training


def _valid(workdir, split="valid"):
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split][-1]


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_recall_learns_lookup_from_scratch(tmp_path):
    config = configs.override(
        configs.get_preset("mnist_recall"),
        memory_size=64,
        eval_memory_size=0,
        steps=800,
        log_every=100,
        eval_every=800,
        checkpoint_every=800,
        eval_batches=8,
    )
    training.train_and_evaluate(config, tmp_path, progress=False)
    valid = _valid(tmp_path)
    assert valid["memory_size"] == 64
    assert valid["q_own"] >= 0.8, valid
    assert valid["kl_a"] >= 0.8 * 4.159, valid  # log 64 = 4.16


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_learned_memory_keeps_several_slots_in_use(tmp_path):
    config = configs.override(
        configs.get_preset("mnist_learned"),
        memory_size=64,
        steps=1000,
        log_every=100,
        eval_every=1000,
        checkpoint_every=1000,
        eval_batches=32,
    )
    training.train_and_evaluate(config, tmp_path, progress=False)
    valid = _valid(tmp_path)
    assert valid["slots_as_mode"] >= 4, valid
    assert valid["top_slot_share"] < 0.9, valid
    assert valid["I_xa"] > 0.3, valid
