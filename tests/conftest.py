"""Shared fixtures. Tests always run this checkout's code, also in the subprocesses they start.

`project` is the one scratch project every test that needs a working folder uses; a test (or module, through
`pytestmark`) tunes it with the `project` marker: `@pytest.mark.project(params="repo" | {...}, prepared=True)`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
HOOKS = Path(__file__).resolve().parent / "hooks"
sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ["AELAB_WARM_START"] = "0"  # the CLI in subprocesses runs cold (warm start: test_warm_start.py)


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


def copy_repo(target: Path) -> Path:
    """The git-tracked files of this checkout in `target`, committed to a fresh git repository, without `dvc.lock`
    (as a user's clone: one commit, so DVCLive and the MLflow commit tag see a revision)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    (target / "dvc.lock").unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    identity = ["-c", "user.name=aelab tests", "-c", "user.email=tests@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *identity, "commit", "-q", "-m", "copy"], cwd=target, check=True)
    return target


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow SQLite store to copy: creating the tables takes seconds, copying the file does not."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _project_params(option: Any) -> str:
    """params.yaml text for the `project` marker's `params`: "tiny" (default), "repo" or a raw mapping."""
    if option == "repo":
        return (REPO / "params.yaml").read_text()
    return yaml.safe_dump(TINY_PARAMS if option == "tiny" else option, sort_keys=False)


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    empty_mlflow_store: Path,
) -> Path:
    """A scratch project as the working directory: `AELAB_PROJECT_ROOT` set, its own MLflow store, a params.yaml
    (tiny by default) and a `dvc.yaml`, so nothing reads or writes the checkout; digits prepared when asked."""
    marker = request.node.get_closest_marker("project")
    options = dict(marker.kwargs) if marker else {}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_mlflow_store, tmp_path / "mlruns" / "mlflow.db")
    (tmp_path / "params.yaml").write_text(_project_params(options.get("params", "tiny")))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    if options.get("prepared"):
        _prepare(tmp_path)
    return tmp_path


def _prepare(root: Path):
    """Run the prepare stage with the project's own params (data and seed)."""
    from aelab.config import load_params
    from aelab.stages.prepare import prepare

    params = load_params(root / "params.yaml")
    return prepare(params.data, params.seed)


@pytest.fixture
def tiny_params(project: Path):
    """The scratch project's params, validated (tiny unless the `project` marker says otherwise)."""
    from aelab.config import load_params

    return load_params(project / "params.yaml")


@pytest.fixture
def prepared_digits(project: Path):
    """The scratch project's data, prepared by the prepare stage."""
    return _prepare(project)
