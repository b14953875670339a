"""Shared fixtures. Tests always run this checkout's code, also in the subprocesses they start."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])


def shared_data_dir() -> Path:
    """MNIST / Fashion-MNIST originals for tests and benchmarks: `AELAB_SHARED_DATA` or `<repo>/../shared/data`."""
    return Path(os.environ.get("AELAB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    folder = shared_data_dir()
    if not (folder / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST originals not found in {folder} (set AELAB_SHARED_DATA)")
    return folder
