"""Shared test setup: quiet TF logs, locate the data directory."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if "VMA_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["VMA_DATA_DIR"] = str(SHARED_DATA)
