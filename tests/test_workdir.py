"""`workdir.atomic_write`: the mode of any new file, nothing left behind on
failure (no TensorFlow import)."""

import dataclasses
import errno
import json
import os
import stat

import pytest

from vma_tf import workdir


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_atomic_write_gives_the_mode_of_a_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "config.json"
        workdir.atomic_write(path, "{}\n")
        workdir.atomic_write(path, "{}\n")  # A replaced file too.
    finally:
        os.umask(old)
    assert os.umask(old) == old  # The umask is left as it was.
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "{}\n"


def test_atomic_write_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old\n")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", full_disk)
        with pytest.raises(OSError, match="No space left"):
            workdir.atomic_write(path, "new\n")
    # A failure while writing (a lone surrogate cannot be encoded).
    with pytest.raises(UnicodeEncodeError):
        workdir.atomic_write(path, "new \ud800\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    assert path.read_text() == "old\n"


def test_a_run_older_than_the_evaluation_fields_resumes_with_its_own_command(
    tmp_path,
):
    """A config.json written before `data.eval_seed` / `data.eval_subset`:
    the run's own command (which leaves them at their defaults) resumes it
    with the values it was evaluated with, not refused and not changed; a
    value given on the command line that is not the run's is refused."""
    from vma_tf import configs

    command = configs.override(configs.get_preset("mnist_recall"), seed=1)
    old = command.to_dict()
    del old["data"]["eval_seed"], old["data"]["eval_subset"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(old))
    config, path = workdir.preflight(command, run, check_data=False)
    assert path == run
    assert (config.data.eval_seed, config.data.eval_subset) == (1, "first")
    assert config == configs.Config.from_dict(old)
    given = configs.override(command, **{"data.eval_subset": "first"})
    assert workdir.preflight(given, run, check_data=False)[0] == config
    other = configs.override(command, **{"data.eval_seed": 5})
    with pytest.raises(configs.ConfigError, match="data.eval_seed=1, not 5"):
        workdir.preflight(other, run, check_data=False)
    # As rewritten by that resume (the values now written out): the same.
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    assert workdir.preflight(command, run, check_data=False)[0] == config
    # A value a legacy config.json never reads as is compared as written.
    (run / "config.json").write_text(
        json.dumps(configs.override(config, **{"data.eval_seed": 3}).to_dict())
    )
    with pytest.raises(configs.ConfigError, match="data.eval_seed=3, not 0"):
        workdir.preflight(command, run, check_data=False)


def test_a_resumable_setting_not_given_keeps_the_runs_value(tmp_path, capsys):
    """Rerun without `--lr_drop_step` / `--precision`, a run keeps its
    learning-rate drop and precision (not the preset's); given, a new value
    is taken and printed. A legacy evaluation field given explicitly is taken
    as given. Without `given` (a library caller's whole config) the config
    is run as it is."""
    from vma_tf import configs

    run_config = configs.override(
        configs.get_preset("mnist_recall"),
        lr_drop_step=400,
        precision="mixed_bfloat16",
        steps=500,
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(run_config.to_json())
    command = configs.override(configs.get_preset("mnist_recall"), steps=500)
    config, _ = workdir.preflight(command, run, check_data=False, given={"train.steps"})
    assert config == run_config
    assert capsys.readouterr().out == ""
    given = configs.override(command, precision="float32")
    config, _ = workdir.preflight(
        given, run, check_data=False, given={"train.steps", "train.precision"}
    )
    assert config == configs.override(run_config, precision="float32")
    assert "train.precision='float32' given (the run has 'mixed_bfloat16')" in (
        capsys.readouterr().out
    )
    assert workdir.preflight(command, run, check_data=False)[0] == command
    # A legacy config.json (no eval_seed: read as the run's seed, 3): an
    # explicit --config.data.eval_seed=0 is compared as given.
    seeded = configs.override(run_config, seed=3)
    old = seeded.to_dict()
    del old["data"]["eval_seed"], old["data"]["eval_subset"]
    (run / "config.json").write_text(json.dumps(old))
    with pytest.raises(configs.ConfigError, match="data.eval_seed=3, not 0"):
        workdir.preflight(
            configs.override(seeded, **{"data.eval_seed": 0}),
            run,
            check_data=False,
            given={"data.eval_seed"},
        )
    assert workdir.preflight(seeded, run, check_data=False, given=set())[0] == (
        configs.override(seeded, **{"data.eval_seed": 3, "data.eval_subset": "first"})
    )


def test_a_workdir_with_checkpoints_but_no_config_is_refused(tmp_path):
    """Its settings are unknown: resuming it with any config would be a
    guess."""
    from vma_tf import configs

    config = configs.get_preset("mnist_recall")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-9000.index").write_text("")
    with pytest.raises(configs.ConfigError, match="checkpoints but no config.json"):
        workdir.preflight(config, run, check_data=False)
    # No checkpoint (a run killed before its first; or a log alone, as the
    # multi-worker patience test writes): nothing is restored, so it starts.
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "metrics.jsonl").write_text("")
    assert workdir.preflight(config, empty, check_data=False)[0] == config


def test_where_a_run_executes_is_the_commands_not_the_runs(tmp_path):
    """--jit, --strategy, --data_dir... left out of a rerun take the
    command's values: they say how it runs, not what it trains."""
    from vma_tf import configs

    base = configs.get_preset("mnist_recall")
    run_config = configs.override(base, jit=not base.train.jit, data_dir="/elsewhere")
    (tmp_path / "config.json").write_text(run_config.to_json())
    config, _ = workdir.preflight(base, tmp_path, check_data=False, given=set())
    assert config == base


def test_a_resumed_run_is_validated_with_the_settings_it_keeps(tmp_path):
    """The interval rules hold for the config that will run: a run logging
    every 50 steps takes `--eval_every=250` (a multiple of its 50, not of the
    preset's 100), and refuses `--log_every=100` against its own
    `eval_every=50`, before TensorFlow loads."""
    from vma_tf import configs

    base = configs.get_preset("mnist_recall")
    run_config = configs.override(
        base, log_every=50, eval_every=150, checkpoint_every=150, steps=600
    )
    (tmp_path / "config.json").write_text(run_config.to_json())
    given = configs.override(base, eval_every=250, steps=600)
    config, _ = workdir.preflight(
        given, tmp_path, check_data=False, given={"train.eval_every", "train.steps"}
    )
    assert (config.train.log_every, config.train.eval_every) == (50, 250)
    logs = configs.override(base, log_every=100, steps=600)
    with pytest.raises(configs.ConfigError, match="--log_every=100"):
        workdir.preflight(
            logs, tmp_path, check_data=False, given={"train.log_every", "train.steps"}
        )


def _run_at(path, step, **values):
    """A fake run directory: config.json of `mnist_recall` with `values`, and
    a checkpoint at `step` (none: 0)."""
    from vma_tf import configs

    config = configs.override(configs.get_preset("mnist_recall"), steps=50000, **values)
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.json").write_text(config.to_json())
    if step:
        (path / "checkpoints" / f"ckpt-{step}.index").write_text("")
    return config


def test_a_drop_cannot_move_into_the_steps_the_run_has_trained(tmp_path):
    """At 47000 without a drop, `--lr_drop_step=45000` would act from 47000
    while config.json said 45000: refused in one line. At the resumed step or
    later it joins. A run that dropped at 45000 cannot move the drop later
    (steps 45000-46999 ran at 1e-4), remove it, or change the rate after it.
    Before any checkpoint nothing has trained."""
    from vma_tf import configs

    def resume(run, config, given=("train.lr_drop_step",)):
        return workdir.preflight(config, run, check_data=False, given=set(given))[0]

    plain = _run_at(tmp_path / "plain", 47000)
    for step in (47000, 48000):
        config = configs.override(plain, lr_drop_step=step)
        assert resume(tmp_path / "plain", config) == config
    with pytest.raises(
        configs.ConfigError,
        match=r"^--lr_drop_step=45000 would change the learning rate of steps the "
        r"run has trained \(it ran at 0.0003 at step 45000 with lr_drop_step=0, "
        r"newest checkpoint 47000\); a new drop must be at or after step 47000$",
    ):
        resume(tmp_path / "plain", configs.override(plain, lr_drop_step=45000))
    dropped = _run_at(tmp_path / "dropped", 47000, lr_drop_step=45000)
    assert resume(tmp_path / "dropped", dropped) == dropped
    for step in (48000, 0):
        with pytest.raises(configs.ConfigError, match=f"^--lr_drop_step={step} "):
            resume(tmp_path / "dropped", configs.override(dropped, lr_drop_step=step))
    with pytest.raises(configs.ConfigError, match="^--lr_after_drop=5e-05 would"):
        resume(
            tmp_path / "dropped",
            configs.override(dropped, lr_after_drop=5e-5),
            given=("train.lr_after_drop",),
        )
    fresh = _run_at(tmp_path / "fresh", 0, lr_drop_step=45000)
    config = configs.override(fresh, lr_drop_step=100)
    assert resume(tmp_path / "fresh", config) == config


def test_a_resumed_run_keeps_how_it_began(tmp_path, capsys):
    """A warm-started run with checkpoints of its own resumes without its
    source (moved or lost) and without `--init_from`, which config.json
    keeps; another `--init_from` (or one for a run begun from scratch) is
    refused in one line. With no checkpoint yet the warm start is still to
    come: its source is checked. A changed execution setting is printed."""
    from vma_tf import configs

    lost = str(tmp_path / "lost_source")
    run = tmp_path / "run"
    began = _run_at(run, 3000, init_from=lost)
    command = dataclasses.replace(  # `override` leaves a field given None as it is.
        began, train=dataclasses.replace(began.train, init_from=None)
    )
    assert workdir.preflight(command, run, check_data=False, given=set())[0] == began
    given = {"train.init_from"}
    assert workdir.preflight(began, run, check_data=False, given=given)[0] == began
    other = configs.override(began, init_from=str(tmp_path / "other"))
    with pytest.raises(
        configs.ConfigError,
        match=r"^--init_from=\S+/other given for a run that resumes from its own "
        r"checkpoint 3000 \(warm-started from \S+/lost_source\); leave",
    ):
        workdir.preflight(other, run, check_data=False, given=given)
    scratch = _run_at(tmp_path / "scratch", 3000)
    with pytest.raises(configs.ConfigError, match=r"\(started from scratch\)"):
        workdir.preflight(
            configs.override(scratch, init_from=lost),
            tmp_path / "scratch",
            check_data=False,
            given=given,
        )
    _run_at(tmp_path / "new", 0, init_from=lost)
    with pytest.raises(configs.ConfigError, match="is not a run directory"):
        workdir.preflight(began, tmp_path / "new", check_data=False, given=given)
    capsys.readouterr()
    jit = configs.override(began, jit=not began.train.jit)
    workdir.preflight(jit, run, check_data=False, given=set())
    assert capsys.readouterr().out == (
        f"{run}: train.jit={jit.train.jit!r} (the run had {began.train.jit!r})\n"
    )


def test_checkpoints_are_numbered_by_the_step_after_the_last_dash(tmp_path):
    # A run directory whose name has dashes and digits of its own.
    directory = tmp_path / "run-7-of-9" / "checkpoints"
    directory.mkdir(parents=True)
    for step in (900, 10000, 5):
        (directory / f"ckpt-{step}.index").write_text("")
    (directory / "ckpt-x.index").write_text("")  # Not numbered: ignored.
    paths = workdir.numbered_checkpoints(directory)
    assert [workdir.step_of(p) for p in paths] == [10000, 900, 5]
    assert workdir.checkpoint_step(directory.parent) == 10000
    assert workdir.checkpoint_step(tmp_path) == 0
