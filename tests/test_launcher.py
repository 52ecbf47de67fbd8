"""The train launcher's command line: bad input gives one line, exit != 0."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(args, tmp_path, env=None):
    return subprocess.run(
        [sys.executable, "-m", "launchers.train", "--progress=false", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


# Bad flag values of every launcher: tests/test_bad_flags.py.


def test_missing_workdir_flag(tmp_path):
    proc = run([], tmp_path)
    assert proc.returncode != 0 and "--workdir is required" in proc.stderr


def test_unwritable_workdir(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run([f"--workdir={tmp_path / 'file' / 'run'}"], tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: --workdir=")
    assert len(proc.stderr.strip().splitlines()) == 1


# Put first on the child's PYTHONPATH: every name lookup and socket connection
# fails at once and is recorded, whatever proxy settings or libraries the child uses.
_NO_NETWORK = """
import os, socket

def _record(address):
    with open(os.environ["VMA_TEST_CONNECT_LOG"], "a") as f:
        f.write(repr(address) + "\\n")

def _blocked(self, address, *args, **kwargs):
    _record(address)
    raise OSError(101, "network blocked by the test")

def _no_lookup(host, *args, **kwargs):
    _record(host)
    raise socket.gaierror(-3, "name lookup blocked by the test")

socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.getaddrinfo = _no_lookup
"""


def test_missing_data_offline_names_file_and_sha(tmp_path):
    """No data anywhere, an empty tfds cache and no network (blocked at the
    socket level): one line naming file, sha256, dirs; nothing is downloaded
    (no connection is even tried) and no run directory is made."""
    empty = tmp_path / "empty"
    empty.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_NETWORK)
    attempts = tmp_path / "connects.log"
    workdir = tmp_path / "run"
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    proc = run(
        [f"--workdir={workdir}", f"--data_dir={empty}"],
        tmp_path,
        env={
            "VMA_DATA_DIR": str(empty),
            "VMA_TFDS_DIR": str(tmp_path / "tfds"),
            "PYTHONPATH": path.rstrip(os.pathsep),
            "VMA_TEST_CONNECT_LOG": str(attempts),
        },
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "binarized_mnist_train.amat.gz" in err and "sha256" in err
    assert str(empty) in err
    assert not workdir.exists()
    assert not attempts.exists() or not attempts.read_text().strip()


def test_config_flags_are_generated_from_the_schema():
    """Every field has `--config.SECTION.NAME`, the short ones also `--NAME`;
    both kinds, and the legacy --baseline, reach the config."""
    from absl import flags

    from launchers import common
    from vma_tf import configs

    fv = flags.FlagValues()
    common.define_config_flags("mnist_recall", flag_values=fv)
    for spec in configs.FIELDS.values():
        assert f"config.{spec.key}" in fv, spec.key
        assert (spec.name in fv) == spec.short, spec.key
    fv(
        [
            "prog",
            "--memory_size=8",
            "--config.model.latent_dim=4",
            "--config.model.hidden_units=64,32",
            "--noconfig.train.jit",
            "--baseline=geometric",
        ]
    )
    config = configs.validate(common.build_config(fv))
    assert (config.model.memory_size, config.model.latent_dim) == (8, 4)
    assert config.model.hidden_units == (64, 32) and not config.train.jit
    assert config.model.estimator == "vimco_geometric"
    assert config.name == "mnist_recall"
    # The fields given (for a resume: the others keep the run's values).
    assert common.given_fields(fv) == {
        "model.memory_size",
        "model.latent_dim",
        "model.hidden_units",
        "train.jit",
        "model.estimator",
    }
