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


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    """`mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI in the environment: never let one test's store
    become the next test's (or its subprocesses') store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def shared_data_dir() -> Path:
    """MNIST / Fashion-MNIST originals for tests and benchmarks: `AELAB_SHARED_DATA` or `<repo>/../shared/data`."""
    return Path(os.environ.get("AELAB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    folder = shared_data_dir()
    if not (folder / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST originals not found in {folder} (set AELAB_SHARED_DATA)")
    return folder


TINY_PARAMS = {
    "seed": 7,
    "data": {"source": "digits"},
    "variants": {
        "undercomplete": {"hidden_dims": [32, 8]},
        "sparse": {"hidden_dims": [80], "rho": 0.1, "beta": 0.5},
        "denoising": {"hidden_dims": [32, 8], "corruption": [{"kind": "masking", "p": 0.3}]},
    },
    "train": {"max_epochs": 2, "batch_size": 128},
}


@pytest.fixture
def tiny_params(tmp_path, monkeypatch):
    """Tiny, fast params and a scratch project folder as the working directory (its own MLflow store)."""
    from aelab.config import validate_params

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    return validate_params(TINY_PARAMS)


@pytest.fixture
def prepared_digits(tiny_params):
    from aelab.stages.prepare import prepare

    return prepare(tiny_params.data, tiny_params.seed)
