"""`aelab bench` on tiny sizes (suite, whole-epoch mode, pair statistics), thread sharing, batched MLflow writes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aelab.config import load_params
from aelab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TINY = ["--steps", "3", "--warmup", "1", "--repeats", "2", "--samples", "300", "--features", "64"]


def params(*overrides: str):
    return load_params(REPO / "params.yaml", ["train.accelerator=cpu", "tracking.log_model=false", *overrides])


def test_pair_ratios_median_fastest_and_spread() -> None:
    from aelab.bench import BenchResult, PathResult, spread

    def runs(name: str, seconds: list[float]) -> list[PathResult]:
        return [PathResult(name, s, samples=100, peak_memory=0, final_loss=0.0, steps=10) for s in seconds]

    result = BenchResult(
        lightning_runs=runs("lightning", [1.2, 2.2, 1.1]),  # the second pair ran while the machine was busy
        bare_runs=runs("bare", [1.0, 2.0, 1.0]),
        device="cpu",
        precision="32",
        batch_size=10,
        hidden_dims=[8],
        n_features=16,
        step_flops=1000,
        machine_flops=1e6,
    )
    assert result.pair_ratios == pytest.approx([1.2, 1.1, 1.1])
    assert result.ratio == pytest.approx(1.1)
    assert result.fastest_ratio == pytest.approx(1.1)
    assert result.lightning.seconds == 1.2 and result.bare.seconds == 1.0  # the median runs
    assert spread([1.0, 1.1, 1.2]) == pytest.approx(0.2 / 1.1)
    assert result.utilisation(result.bare) == pytest.approx(1000 * 10 / 1.0 / 1e6)


def test_suite_prints_the_four_layouts_and_one_summary(capsys: pytest.CaptureFixture) -> None:
    from aelab.cli import main

    assert main(["bench", "--params", str(REPO / "params.yaml"), "--suite", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("time per sample, lightning / bare:") == 4
    assert "median of 2 interleaved pairs" in out and "2 interleaved repeats per path" in out
    assert "% of sgemm (1024x1024 fp32" in out and "the step's matmuls alone" in out
    summary = out[out.index("aelab bench --suite") :]
    for dims, batch in (("64-1000-500-250-30", 128), ("64-1000-500-250-30", 256), ("64-256-32", 256)):
        assert any(dims in line and f" {batch} " in line for line in summary.splitlines()), (dims, batch)
    default = "-".join(map(str, [64, *params().variants.undercomplete.hidden_dims]))
    assert any(default in line and " 64 " in line for line in summary.splitlines())


def test_layouts_override_the_network_and_batch_only() -> None:
    from aelab.bench_report import SUITE, Layout

    base = params()
    deep = SUITE[0].apply(base, "undercomplete")
    assert deep.variants.undercomplete.hidden_dims == [1000, 500, 250, 30] and deep.train.batch_size == 128
    assert deep.train.lr == base.train.lr and deep.variants.denoising == base.variants.denoising
    assert Layout(None, None).apply(base, "undercomplete") is base


def test_epoch_mode_times_whole_epochs_with_validation_checkpoints_and_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aelab.bench import BenchOptions, run_bench

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    options = BenchOptions(samples=320, features=64, repeats=2, epoch=True)
    result = run_bench(params("variants.undercomplete.hidden_dims=[32, 8]", "train.batch_size=64"), options)
    assert result.mode == "epoch" and len(result.bare_runs) == len(result.lightning_runs) == 2
    for run in [*result.bare_runs, *result.lightning_runs]:
        assert run.steps == math.ceil(320 / 64) and run.samples == 320 and run.seconds > 0
    # Same initial weights and data, two epochs each: the validation losses agree closely.
    assert result.bare.final_loss == pytest.approx(result.lightning.final_loss, rel=0.02)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "data").exists()  # throw-away store and folders


def test_the_first_path_of_a_pair_alternates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aelab.bench import BenchOptions, run_bench

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    order: list[str] = []
    options = BenchOptions(steps=2, warmup=1, repeats=3, samples=256, features=64)
    result = run_bench(params("variants.undercomplete.hidden_dims=[16, 4]"), options, order.append)
    assert [message.split(": ")[1] for message in order] == [
        "bare",
        "lightning",
        "lightning",
        "bare",
        "bare",
        "lightning",
    ]
    assert len(result.pair_ratios) == 3


def test_threads_divide_the_cores_and_honour_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    from aelab import threads

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.WORKERS_ENV, raising=False)
    try:
        assert threads.configure(3) == 2 and torch.get_num_threads() == 2
        assert threads.threads_per_worker(16) == 1  # never fewer than one
        monkeypatch.setenv(threads.WORKERS_ENV, "4")
        assert threads.configure() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert threads.configure(2) == 3  # the user's explicit setting wins
        monkeypatch.setenv(threads.WORKERS_ENV, "zero")
        with pytest.raises(ConfigError, match="AELAB_WORKERS='zero'"):
            threads.workers_from_env()
    finally:
        torch.set_num_threads(before)


def test_metrics_are_written_in_one_batch_per_epoch_with_their_steps(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from aelab.tracking import mlflow_logger
    from aelab.training.trainer import WriteMetricsPerEpoch

    cfg = params().tracking.model_copy(update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    logger = mlflow_logger(cfg, "batched", {})
    client = MlflowClient(cfg.uri)
    logger.log_metrics({"train/loss_step": 0.5, "epoch": 0}, step=49)
    logger.log_metrics({"train/loss_step": 0.4, "epoch": 0}, step=99)
    logger.log_metrics({"val/loss": 0.3, "epoch": 0}, step=99)
    logger.log_metrics({"train/loss_epoch": 0.45, "epoch": 0}, step=99)
    assert client.get_metric_history(logger.run_id, "val/loss") == []  # held back until the next epoch starts
    trainer = type("Trainer", (), {"loggers": [logger]})()
    WriteMetricsPerEpoch().on_train_epoch_start(trainer, None)
    history = client.get_metric_history(logger.run_id, "train/loss_step")
    assert [(m.step, m.value) for m in history] == [(49, 0.5), (99, 0.4)]
    assert [m.value for m in client.get_metric_history(logger.run_id, "val/loss")] == [0.3]
    assert [m.value for m in client.get_metric_history(logger.run_id, "train/loss_epoch")] == [0.45]
    logger.log_metrics({"train/loss_step": 0.2, "epoch": 1}, step=149)
    logger.finalize("success")
    assert [m.step for m in client.get_metric_history(logger.run_id, "train/loss_step")] == [49, 99, 149]
    logger.log_metrics({"scratch/test/loss": 0.1})  # no step: logged by hand, written at once
    assert [m.value for m in client.get_metric_history(logger.run_id, "scratch/test/loss")] == [0.1]


def test_epoch_mode_and_profile_from_the_command_line(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aelab.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    args = ["bench", "--params", str(REPO / "params.yaml"), "--epoch", "--profile", "--hidden-dims", "16,4", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "64-16-4 undercomplete autoencoder, batch 64, cpu, precision 32, one epoch with validation" in out
    assert "s/epoch" in out and "final val loss" in out and "median of 2 interleaved pairs" in out
    # 3 timed steps rounded up to a whole call: 300 rows at batch 64 are 5 batches, one call per epoch
    assert "cProfile of 5 training steps (up to 8 per Lightning step)" in out
    assert "run_backward" in out  # the backward pass is always there
