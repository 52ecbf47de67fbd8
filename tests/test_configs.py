"""Presets, overrides and validation."""

import dataclasses

import pytest

from vma_tf import configs


@pytest.mark.parametrize("name", sorted(configs.PRESETS))
def test_presets_are_valid_and_round_trip(name):
    cfg = configs.validate(configs.get_preset(name))
    assert configs.Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.train.batch_size == 32 and cfg.model.num_samples == 4
    assert cfg.train.learning_rate == 3e-4


def test_paper_settings():
    recall = configs.get_preset("mnist_recall")
    assert recall.model.memory_size == 256 and recall.data.eval_memory_size == 2048
    assert recall.model.hidden_units == (256, 128)
    assert recall.model.latent_dim == 32 and recall.model.embed_dim == 128
    learned = configs.get_preset("mnist_learned")
    assert learned.model.memory == "learned" and learned.model.memory_dim == 256
    assert configs.get_preset("mnist_vae").model.kind == "vae"


def test_override_ignores_none_and_rejects_unknown():
    cfg = configs.override(configs.get_preset("mnist_recall"), memory_size=16,
                           steps=None)
    assert cfg.model.memory_size == 16 and cfg.train.steps == 100_000
    with pytest.raises(configs.ConfigError, match="unknown config field"):
        configs.override(cfg, colour="red")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        configs.get_preset("mnist_recall").train.steps = 3


@pytest.mark.parametrize("overrides,flag", [
    (dict(num_samples=1), "--num_samples"),
    (dict(memory_size=0), "--memory_size"),
    (dict(baseline="mean"), "--baseline"),
    (dict(eval_every=150), "--eval_every"),
    (dict(eval_memory_size=20000), "--eval_memory_size"),
])
def test_validation_names_the_flag(overrides, flag):
    cfg = configs.override(configs.get_preset("mnist_recall"), **overrides)
    with pytest.raises(configs.ConfigError, match=flag):
        configs.validate(cfg)
