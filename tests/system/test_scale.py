"""Scale and recovery as real processes: DDP (ddp, ddp_spawn, torchrun), resume after Ctrl-C and SIGKILL, and
tracking on an MLflow server over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from aelab.training.lookup import file_digest
from tests.helpers import FAST
from tests.helpers import fast_params as params

pytestmark = [pytest.mark.slow, pytest.mark.project(params="repo", prepared=True)]


def aelab(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    overrides = [x for o in FAST for x in ("--set", o)]
    return subprocess.run(
        [sys.executable, "-m", "aelab.cli", *args, *overrides],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs(project: Path, uri: str | None = None) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("aelab")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def metrics(project: Path, variant: str = "undercomplete") -> dict[str, float]:
    return json.loads((project / "data" / "models" / variant / "metrics.json").read_text())


# ---- DDP on CPU -----------------------------------------------------------------------------------------------
def test_two_process_ddp_logs_one_run_and_matches_one_process(project: Path) -> None:
    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    ddp = aelab(
        project, "train", "--variant", "undercomplete", "--set", "train.devices=2", "--set", "train.strategy=ddp"
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    distributed = metrics(project)
    found = runs(project)
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    assert {"train/loss", "val/loss", "test/loss"} <= set(found[0].data.metrics)
    assert found[0].data.params["world_size"] == "2"

    single = train_variant(params(), "undercomplete", load_prepared(Path("data/prepared"))).metrics
    for key in ("test/loss", "test/mse"):
        assert torch.isfinite(torch.tensor(distributed[key]))
        assert distributed[key] == pytest.approx(single[key], rel=0.03)
    assert len(runs(project)) == 2  # the single-process training is the second run


def test_ddp_spawn_carries_our_logger_into_the_workers_and_logs_one_run(project: Path) -> None:
    # ddp_spawn pickles the trainer with its loggers: our MLflow logger class must be importable by name
    sets = ["train.devices=2", "train.strategy=ddp_spawn"]
    spawned = aelab(project, "train", "--variant", "undercomplete", *(x for o in sets for x in ("--set", o)))
    assert spawned.returncode == 0, spawned.stderr[-3000:]
    (run,) = runs(project)
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert metrics(project)["epochs"] == 2


def test_two_process_ddp_trains_the_pretrained_conv_variant_and_logs_one_run(project: Path) -> None:
    sets = ["train.devices=2", "train.strategy=ddp"]
    sets += ["variants.stacked_conv.pretrain_epochs=1", "variants.stacked_conv.max_epochs=1"]
    ddp = aelab(project, "train", "--variant", "stacked_conv", *(x for o in sets for x in ("--set", o)))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (run,) = runs(project)
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert {"pretrain/layer1/loss", "pretrain/layer3/loss", "train/loss", "test/loss"} <= set(run.data.metrics)
    assert metrics(project, "stacked_conv")["total_epochs"] == 3 * 1 + 1


def test_torchrun_starts_all_ranks_at_once_and_still_logs_one_run(project: Path) -> None:
    """torchrun (and SLURM) start every rank together: only rank zero may open the tracking store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sets = [*FAST, "train.devices=2", "train.strategy=ddp"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    command += ["-m", "aelab.cli", "train", "--variant", "sparse", *(x for o in sets for x in ("--set", o))]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(project)
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"


# ---- resume ---------------------------------------------------------------------------------------------------
KILLER = """
import os, signal, sys
import lightning as L
from aelab.training import run as train

class Kill(L.Callback):
    def on_train_start(self, trainer, module):
        print(f"started at epoch {{trainer.current_epoch}}", file=sys.stderr, flush=True)

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == {epoch}:
            os.kill(os.getpid(), signal.{signal})

build = train.build_trainer
train.build_trainer = lambda *a, callbacks=None, **k: build(*a, callbacks=[*(callbacks or []), Kill()], **k)
from aelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_interrupted_and_killed_training_resumes_to_the_same_result_in_the_same_run(project: Path) -> None:
    """Ctrl-C at the start of epoch 1, SIGKILL at the start of epoch 2, then a plain restart finishes the run."""
    from mlflow import MlflowClient

    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    epochs = "train.max_epochs=3"
    args = ["train", "--variant", "denoising", *(x for o in [*FAST, epochs] for x in ("--set", o))]

    def interrupted(epoch: int, sig: str) -> subprocess.CompletedProcess:
        script = textwrap.dedent(KILLER.format(epoch=epoch, signal=sig))
        return subprocess.run([sys.executable, "-c", script, *args], cwd=project, capture_output=True, text=True)

    ctrl_c = interrupted(1, "SIGINT")
    assert ctrl_c.returncode == 130, ctrl_c.stderr[-2000:]  # a clear message and the conventional exit status
    assert "re-run the command to resume" in ctrl_c.stderr
    (first,) = runs(project)
    killed = interrupted(2, "SIGKILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert f"denoising: resuming from {Path('data/checkpoints/denoising')}" in killed.stderr
    assert "started at epoch 0" in ctrl_c.stderr and "started at epoch 1" in killed.stderr  # resumed
    assert not (project / "data" / "models" / "denoising").exists()
    (ckpt,) = (project / "data" / "checkpoints" / "denoising").iterdir()
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["epoch"] == 1

    data = load_prepared(Path("data/prepared"))
    resumed = train_variant(params(epochs), "denoising", data)
    assert resumed.run_id == first.info.run_id  # the run is continued, not duplicated
    (run,) = runs(project)
    assert run.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/loss")) == [18, 37, 56]

    # The same training left alone, in a fresh project, ends with the same numbers, bit for bit.
    (project / "alone").mkdir()
    os.chdir(project / "alone")
    os.environ["AELAB_PROJECT_ROOT"] = str(project / "alone")
    alone = train_variant(params(epochs), "denoising", data)
    assert resumed.metrics == alone.metrics


# ---- an MLflow tracking server --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on loopback with a SQLite backend and proxied artifacts, stopped after the test."""
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, folder
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_training_is_tracked_on_an_mlflow_server_over_http(project: Path, mlflow_server) -> None:
    url, folder = mlflow_server
    done = aelab(project, "train", "--variant", "sparse", "--set", f"tracking.uri={url}", "--set", "train.max_epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(project, url)
    assert run.info.status == "FINISHED" and "val/loss" in run.data.metrics
    from mlflow import MlflowClient

    assert "samples.png" in [a.path for a in MlflowClient(url).list_artifacts(run.info.run_id)]
    assert list((folder / "artifacts").rglob("samples.png"))  # uploaded through the server, not written locally
    assert not runs(project)  # nothing tracked in the project's own store
    assert not (project / "data" / "models" / "sparse" / "run.json").exists()  # the run is found by its model file
    model_digest = run.data.tags["aelab.model_sha256"]
    assert model_digest == file_digest(project / "data" / "models" / "sparse" / "model.pt")
