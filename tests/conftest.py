"""Shared test setup: quiet TF logs, locate the data directory."""

import os
import pathlib
from importlib.metadata import version

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if "VMA_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["VMA_DATA_DIR"] = str(SHARED_DATA)


def pytest_sessionstart(session):
    """With `VMA_REQUIRE_DATA=1` (set by `.ci/run`) a missing data directory
    stops the run: the modules that read the shared files (test_omniglot_data,
    test_data_files) would otherwise skip, and CI skips no test."""
    if os.environ.get("VMA_REQUIRE_DATA") != "1":
        return
    root = os.environ.get("VMA_DATA_DIR")
    if not root or not (pathlib.Path(root) / "SHA256SUMS").is_file():
        raise pytest.UsageError(
            f"VMA_REQUIRE_DATA=1 but VMA_DATA_DIR={root} holds no SHA256SUMS: "
            "point it at the shared data directory"
        )


def _grouped_files():
    """The test files that mark themselves `xdist_group`."""
    here = pathlib.Path(__file__).parent
    return {
        f"tests/{p.name}"
        for p in here.glob("test_*.py")
        if "pytest.mark.xdist_group(" in p.read_text()
    }


def pytest_xdist_node_collection_finished(node, ids):
    """Stops the run when `--dist loadgroup` would not group the files marked
    `xdist_group` (their module fixtures would be built on both workers, and
    again after each switch to another file). pytest-xdist marks a grouped
    test by appending `@group` to its node id; with pytest 9.2 the append is
    silently lost (pytest-xdist#1386), hence pytest 9.1 in requirements.txt."""
    if node.config.getoption("dist", "no") != "loadgroup":
        return
    grouped = _grouped_files()
    for nodeid in ids:
        if nodeid.split("::")[0] in grouped and "@" not in nodeid:
            raise pytest.UsageError(
                f"--dist loadgroup does not group {nodeid} (no @group suffix): "
                f"pytest {pytest.__version__} with pytest-xdist "
                f"{version('pytest-xdist')} (pytest-xdist#1386); install the "
                "versions of requirements.txt"
            )
