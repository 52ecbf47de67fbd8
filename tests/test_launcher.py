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


def test_missing_data_offline_names_file_and_sha(tmp_path):
    """No data anywhere and no network: one line naming file, sha256, dirs."""
    empty = tmp_path / "empty"
    empty.mkdir()
    workdir = tmp_path / "run"
    proc = run(
        [f"--workdir={workdir}", f"--data_dir={empty}"],
        tmp_path,
        env={
            "VMA_DATA_DIR": str(empty),
            # Any download attempt fails at once.
            "http_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "binarized_mnist_train.amat.gz" in err and "sha256" in err
    assert str(empty) in err
    assert not workdir.exists()
