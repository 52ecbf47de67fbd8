"""The train launcher's command line: bad input gives one line, exit != 0."""

import os
import pathlib
import subprocess
import sys

import pytest

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


BAD = [
    (["--preset=nope"], "--preset='nope' is unknown"),
    (["--num_samples=1"], "--num_samples=1 must be >= 2"),
    (["--preset=mnist_vae", "--estimator=rws"], "--estimator=rws needs a VMA"),
    (["--memory_size=0"], "--memory_size=0 must be >= 1"),
    (["--memory_size=20000"], "exceeds the 10000 images"),
    (["--preset=mnist_vae", "--batch_size=20000"], "--batch_size=20000 exceeds"),
    (["--learning_rate=-1"], "--learning_rate=-1.0 must be a positive"),
    (["--steps=150", "--log_every=100"], "--steps=150 must be a positive multiple"),
    (["--similarity=foo"], "similarity"),
    (["--steps=abc"], "steps"),
    (["positional"], "unexpected arguments"),
    (["--init_from=/nonexistent/run"], "--init_from=/nonexistent/run is not a run"),
    (
        [
            "--preset=omniglot_fewshot",
            "--targets_per_class=15",
            "--memory_per_class=10",
        ],
        "--targets_per_class=15 + --memory_per_class=10 exceeds",
    ),
    (["--preset=omniglot_fewshot", "--batch_size=64"], "--batch_size=64 conflicts"),
    (
        ["--preset=omniglot_fewshot", "--batch_classes=200"],
        "exceeds the 144 characters",
    ),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_flags_fail_with_one_line(tmp_path, args, message):
    workdir = tmp_path / "run"
    proc = run([*args, f"--workdir={workdir}"], tmp_path)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert any(message in l for l in lines), proc.stderr
    if "FATAL Flags parsing error" not in proc.stderr:
        assert len(lines) == 1, proc.stderr
    assert not workdir.exists()


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
