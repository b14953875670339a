"""Scale and speed: DDP sharding and logging, resume after a kill, a remote MLflow server, `aelab bench`."""

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

from aelab.config import load_params
from aelab.data.datamodule import AutoencoderDataModule, IndexBatches
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError, TrainingError
from aelab.training.lookup import file_digest

REPO = Path(__file__).resolve().parents[1]
FAST = ["train.max_epochs=2", "tracking.log_model=false", "train.accelerator=cpu"]


def params(*overrides: str):
    return load_params(REPO / "params.yaml", [*FAST, *overrides])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder with the digits prepared in it, as the working directory."""
    from aelab.stages.prepare import prepare

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    prepare(params().data, 42)
    return tmp_path


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


# ---- sharding -------------------------------------------------------------------------------------------------
def test_ranks_see_disjoint_shards_that_make_up_the_single_process_batches() -> None:
    n, batch, world = 103, 8, 2
    single = [b for _, b in IndexBatches(n, batch, shuffle=True, seed=5)]
    shards = [IndexBatches(n, batch // world, shuffle=True, seed=5, rank=r, world_size=world) for r in range(world)]
    per_rank = [[b for _, b in s] for s in shards]
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert len(per_rank[0]) == len(per_rank[1])
    assert set(seen.tolist()) == set(range(n))  # every row, and only the one wrap-around pad is repeated
    assert len(seen) - n == 1
    for k in range(len(single) - 1):  # the k-th global batch is the union of the ranks' k-th batches
        assert sorted(torch.cat([per_rank[0][k], per_rank[1][k]]).tolist()) == sorted(single[k].tolist())
    shards[0].set_epoch(1)
    assert not torch.equal(torch.cat([b for _, b in shards[0]]), torch.cat(per_rank[0]))


def test_global_batch_must_split_evenly_over_processes() -> None:
    data = PreparedData(*(Split(torch.rand(10, 4).numpy(), None) for _ in range(3)))
    dm = AutoencoderDataModule(data, batch_size=9)
    with pytest.raises(ConfigError, match=r"train\.batch_size: 9 .* divisible by the number of processes \(2\)"):
        dm.per_rank_batch_size(9, 2)


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


@pytest.mark.slow
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
    assert torch.load(ckpt / "last.ckpt", weights_only=False)["epoch"] == 1

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


def test_a_finished_training_run_again_starts_a_new_run(project: Path) -> None:
    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    data = load_prepared(Path("data/prepared"))
    one = train_variant(params("train.max_epochs=1"), "undercomplete", data)
    two = train_variant(params("train.max_epochs=1"), "undercomplete", data)
    assert one.run_id != two.run_id and one.metrics == two.metrics
    assert sorted(p.name for p in next((project / "data" / "checkpoints" / "undercomplete").iterdir()).iterdir()) == [
        "best.ckpt",
        "complete",
        "dvclive",
        "last.ckpt",
        "run.json",
    ]


def test_diverging_loss_is_reported_within_a_few_steps(project: Path) -> None:
    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    data = load_prepared(Path("data/prepared"))
    bad = PreparedData(Split(data.train.x * float("nan"), None), data.val, data.test, data.meta)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 0, step [123];"):
        train_variant(params("train.check_finite_every_n_steps=3", "model.loss=mse"), "undercomplete", bad)


@pytest.mark.slow
def test_compiled_training_matches_eager_training(project: Path) -> None:
    """`train.compile` runs the module through torch.compile (inductor needs a C compiler on CPU)."""
    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    data = load_prepared(Path("data/prepared"))
    eager = train_variant(params("train.max_epochs=1"), "sparse", data).metrics
    compiled = train_variant(params("train.max_epochs=1", "train.compile=true"), "sparse", data).metrics
    assert compiled["test/loss"] == pytest.approx(eager["test/loss"], rel=1e-3)


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
    assert not (project / "mlruns" / "mlflow.db").exists()
    assert not (project / "data" / "models" / "sparse" / "run.json").exists()  # the run is found by its model file
    model_digest = run.data.tags["aelab.model_sha256"]
    assert model_digest == file_digest(project / "data" / "models" / "sparse" / "model.pt")


# ---- aelab bench ----------------------------------------------------------------------------------------------
def test_bench_runs_both_paths_and_reports(capsys: pytest.CaptureFixture) -> None:
    from aelab.cli import main

    args = ["--steps", "6", "--warmup", "2", "--repeats", "1", "--samples", "700", "--features", "64"]
    assert (
        main(["bench", "--params", str(REPO / "params.yaml"), "--hidden-dims", "32,8", "--batch-size", "64", *args])
        == 0
    )
    out = capsys.readouterr().out
    assert "64-32-8 undercomplete autoencoder, batch 64, cpu" in out
    assert "time per sample, lightning / bare:" in out
    assert "machine sgemm throughput" in out
    for path in ("bare", "lightning"):
        assert path in out


def test_bench_runs_the_convolutional_variants_on_square_images(capsys: pytest.CaptureFixture) -> None:
    from aelab.cli import main

    args = ["--steps", "3", "--warmup", "1", "--repeats", "1", "--samples", "300", "--features", "64"]
    for variant in ("conv", "stacked_conv"):
        assert main(["bench", "--params", str(REPO / "params.yaml"), "--variant", variant, *args]) == 0
        out = capsys.readouterr().out
        assert f"64-12 {variant} autoencoder" in out and "time per sample, lightning / bare:" in out


def test_bench_choices_on_the_command_line_match_the_bench() -> None:
    from aelab import bench, cli

    assert cli.BENCH_DATA == bench.DATA_KINDS and cli.BENCH_PRECISIONS == bench.PRECISIONS


def test_bench_rejects_a_precision_it_cannot_compare() -> None:
    from aelab.cli import main

    assert main(["bench", "--params", str(REPO / "params.yaml"), "--set", "train.precision='64'"]) == 2


# ---- GPU paths (skipped without CUDA) -------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_data_resident_on_the_gpu_and_batches_stay_there(project: Path) -> None:
    import lightning as L

    from aelab.data.prepared import load_prepared
    from aelab.training.run import build_datamodule

    dm = build_datamodule(params("train.accelerator=cuda"), "denoising", load_prepared(Path("data/prepared")))
    trainer = L.Trainer(accelerator="cuda", devices=1, logger=False, max_steps=1)
    dm.trainer = trainer
    dm.setup("fit")
    assert dm.tensors["train"].is_cuda
    number, index = next(iter(dm.train_dataloader().sampler))
    assert index.is_cuda
    batch = dm.train_dataloader().dataset[(number, index)]
    assert batch[0].is_cuda


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_training_on_the_gpu(project: Path, precision: str) -> None:
    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    overrides = ("train.accelerator=cuda", f"train.precision='{precision}'")
    result = train_variant(params(*overrides), "sparse", load_prepared(Path("data/prepared")))
    assert torch.isfinite(torch.tensor(result.metrics["test/loss"]))
