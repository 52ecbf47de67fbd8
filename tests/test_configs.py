"""Presets, overrides and validation."""

import dataclasses
import json
import re

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
    cfg = configs.override(
        configs.get_preset("mnist_recall"), memory_size=16, steps=None
    )
    assert cfg.model.memory_size == 16 and cfg.train.steps == 100_000
    with pytest.raises(configs.ConfigError, match="unknown config field"):
        configs.override(cfg, colour="red")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        configs.get_preset("mnist_recall").train.steps = 3


@pytest.mark.parametrize(
    "overrides,flag",
    [
        (dict(num_samples=1), "--num_samples"),
        (dict(memory_size=0), "--memory_size"),
        (dict(baseline="mean"), "--baseline"),
        (dict(estimator="reinforce"), "--estimator"),
        (dict(gumbel_temperature=0.0), "--gumbel_temperature"),
        (dict(straight_through=True), "--straight_through"),
        (dict(eval_every=150), "--eval_every"),
        (dict(eval_memory_size=20000), "--eval_memory_size"),
    ],
)
def test_validation_names_the_flag(overrides, flag):
    # Some values (the legacy --baseline) are refused by override already.
    with pytest.raises(configs.ConfigError, match=flag):
        configs.validate(
            configs.override(configs.get_preset("mnist_recall"), **overrides)
        )


def test_omniglot_episode_sizes_are_derived():
    cfg = configs.get_preset("omniglot_fewshot")
    assert (cfg.train.batch_size, cfg.model.memory_size) == (32, 32)
    cfg = configs.override(cfg, memory_per_class=8, confounder_classes=2)
    assert (cfg.train.batch_size, cfg.model.memory_size) == (32, 80)
    configs.validate(cfg)
    with pytest.raises(configs.ConfigError, match="--batch_size=64 conflicts"):
        configs.override(cfg, batch_size=64)


@pytest.mark.parametrize(
    "overrides,flag",
    [
        (dict(targets_per_class=10, memory_per_class=11), "--targets_per_class"),
        (dict(batch_classes=100, confounder_classes=50), "--batch_classes"),
        (dict(batch_classes=0), "--batch_classes"),
    ],
)
def test_omniglot_episode_validation(overrides, flag):
    cfg = configs.override(configs.get_preset("omniglot_fewshot"), **overrides)
    with pytest.raises(configs.ConfigError, match=flag):
        configs.validate(cfg)


def test_omniglot_presets():
    learned = configs.get_preset("omniglot_learned")
    assert learned.model.memory == "learned" and learned.model.channels == 32
    assert learned.model.weight_decay == 3e-4
    gmn = configs.get_preset("omniglot_gmn")
    assert gmn.model.channels < 64 and gmn.model.weight_decay == 3e-4
    # Table 1's model: p(z|m_a) starts at N(0, I) (with Glorot's init z went
    # unused on 3 of 5 seeds; README "Deviations from the paper").
    for name in ("omniglot_gmn", "omniglot_bgeval"):
        assert configs.get_preset(name).model.prior_z_init == "standard_normal"
    assert configs.get_preset("omniglot_fewshot_soft").model.kind == "soft_attention"
    assert configs.get_preset("omniglot_fewshot").model.latent_dim == 64


def test_estimator_flags_and_the_old_baseline_flag():
    base = configs.get_preset("mnist_recall")
    assert base.model.estimator == "vimco"
    geo = configs.override(base, baseline="geometric")
    assert geo.model.estimator == "vimco_geometric"
    assert configs.override(base, estimator="vimco_geometric").model.baseline == (
        "geometric"
    )
    # An explicit estimator replaces a geometric base config's baseline.
    nvil = configs.validate(configs.override(geo, estimator="nvil"))
    assert (nvil.model.estimator, nvil.model.baseline) == ("nvil", "arithmetic")
    with pytest.raises(configs.ConfigError, match="--estimator=vimco_geometric"):
        configs.override(base, estimator="rws", baseline="geometric")
    with pytest.raises(configs.ConfigError, match="--baseline=geometric"):
        configs.validate(configs.override(nvil, baseline="geometric"))
    # Over a geometric base, arithmetic is plain VIMCO; beside an estimator
    # that is not its own, either baseline is a conflict.
    assert configs.override(geo, baseline="arithmetic").model.estimator == "vimco"
    for estimator, baseline in (
        ("vimco", "geometric"),
        ("vimco_geometric", "arithmetic"),
    ):
        with pytest.raises(
            configs.ConfigError, match=f"conflicts with --estimator={estimator}$"
        ):
            configs.override(base, estimator=estimator, baseline=baseline)
    gumbel = configs.override(base, estimator="gumbel", straight_through=True)
    assert configs.validate(gumbel).model.straight_through
    with pytest.raises(configs.ConfigError, match="--estimator=nvil needs a VMA"):
        configs.validate(
            configs.override(configs.get_preset("mnist_vae"), estimator="nvil")
        )


def test_old_config_json_without_estimator_fields_loads():
    old = configs.get_preset("mnist_recall").to_dict()
    for field in ("estimator", "gumbel_temperature", "straight_through"):
        del old["model"][field]
    loaded = configs.Config.from_dict(old)
    assert loaded == configs.get_preset("mnist_recall")
    old["model"]["baseline"] = "geometric"
    assert configs.Config.from_dict(old).model.estimator == "vimco_geometric"


def test_old_config_json_without_eval_seed_keeps_its_evaluation_sets():
    """Before `data.eval_seed` the evaluation sets were drawn with
    `train.seed`: an old config.json reads as that seed (its runs resume and
    evaluate on the sets they had); a new one keeps its own."""
    old = configs.override(configs.get_preset("mnist_recall"), seed=3).to_dict()
    del old["data"]["eval_seed"], old["data"]["eval_subset"]
    assert configs.Config.from_dict(old).data.eval_seed == 3
    new = configs.override(configs.get_preset("mnist_recall"), seed=3)
    assert configs.Config.from_dict(new.to_dict()).data.eval_seed == 0
    # Before `data.eval_subset` a partial evaluation read the first batches.
    assert configs.Config.from_dict(old).data.eval_subset == "first"
    assert configs.Config.from_dict(new.to_dict()).data.eval_subset == "spread"


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("model", "memory_size", "8", "model.memory_size='8' is not int"),
        ("train", "steps", 4.5, "train.steps=4.5 is not int"),
        ("train", "jit", "false", "train.jit='false' is not bool"),
        ("train", "steps", True, "train.steps=True is not int"),
        ("model", "hidden_units", [1, "2"], "model.hidden_units=(1, '2') is not"),
        ("train", "learning_rate", "3e-4", "train.learning_rate='3e-4' is not float"),
        ("train", None, [1], "train is not a mapping"),
    ],
)
def test_config_json_of_other_types_is_refused_naming_the_field(
    section, field, value, message
):
    """A hand-edited config.json (`--config_json`, a workdir's): a value of
    another type is one `ConfigError` naming the field, not a traceback in
    validation or training, nor a string "false" read as True."""
    d = configs.get_preset("mnist_recall").to_dict()
    if field is None:
        d[section] = value
    else:
        d[section][field] = value
    with pytest.raises(configs.ConfigError, match=re.escape(message)):
        configs.Config.from_dict(d)
    d = configs.get_preset("mnist_recall").to_dict()
    d["train"]["learning_rate"] = 1  # An int where a float goes: fine.
    assert configs.Config.from_dict(d).train.learning_rate == 1.0


def test_old_config_json_with_baseline_field_loads():
    """config.json files written before the `baseline` field went."""
    old = configs.get_preset("mnist_recall").to_dict()
    assert "baseline" not in old["model"]
    for baseline, estimator, want in [
        ("arithmetic", "vimco", "vimco"),
        ("geometric", "vimco", "vimco_geometric"),
        ("geometric", "vimco_geometric", "vimco_geometric"),
        ("arithmetic", "nvil", "nvil"),
    ]:
        old["model"].update(baseline=baseline, estimator=estimator)
        loaded = configs.Config.from_dict(old)
        assert loaded.model.estimator == want
        assert loaded.model.baseline == baseline  # Derived, read-only.
        assert "baseline" not in loaded.to_dict()["model"]


def test_schema_fields_carry_help_and_choices():
    for key, spec in configs.FIELDS.items():
        assert spec.help and spec.help.endswith("."), key
        if spec.choices:
            assert spec.default is None or spec.default in spec.choices, key
    assert configs.FIELDS["model.estimator"].choices is configs.ESTIMATORS
    assert configs.FIELDS["model.similarity"].choices is configs.SIMILARITIES
    assert configs.flag_name("model", "memory_size") == "memory_size"
    assert configs.flag_name("model", "latent_dim") == "config.model.latent_dim"
    assert ("train", "jit") in configs.RESUMABLE_FIELDS
    assert ("model", "memory_size") not in configs.RESUMABLE_FIELDS


def test_override_takes_dotted_keys():
    base = configs.get_preset("mnist_recall")
    cfg = configs.override(base, **{"model.latent_dim": 8, "train.steps": 200})
    assert (cfg.model.latent_dim, cfg.train.steps) == (8, 200)
    with pytest.raises(configs.ConfigError, match="unknown config field 'model.x'"):
        configs.override(base, **{"model.x": 1})
    with pytest.raises(configs.ConfigError, match="set twice"):
        configs.override(base, memory_size=8, **{"model.memory_size": 16})
    with pytest.raises(configs.ConfigError, match="--config.model.latent_dim=0"):
        configs.validate(configs.override(base, latent_dim=0))
    with pytest.raises(configs.ConfigError, match="--config.model.kind='gan'"):
        configs.validate(configs.override(base, kind="gan"))


def test_run_with_an_old_config_json_resumes(tmp_path):
    """A workdir whose config.json still has `baseline` passes the resume check."""
    from vma_tf import workdir

    config = configs.override(
        configs.get_preset("mnist_recall"), estimator="vimco_geometric"
    )
    old = config.to_dict()
    old["model"]["baseline"] = "geometric"
    (tmp_path / "config.json").write_text(json.dumps(old))
    workdir.check_workdir(tmp_path, config)
    with pytest.raises(configs.ConfigError, match="model.estimator='vimco_geometric'"):
        workdir.check_workdir(tmp_path, configs.override(config, estimator="vimco"))
