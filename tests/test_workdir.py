"""`workdir.atomic_write`: the mode of any new file, nothing left behind on
failure (no TensorFlow import)."""

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
