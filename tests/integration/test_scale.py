"""Scale and speed in-process: a finished training run again, divergence, torch.compile, `aelab bench`, the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aelab.data.prepared import PreparedData, Split
from aelab.errors import TrainingError
from tests.conftest import REPO
from tests.helpers import fast_params as params

pytestmark = pytest.mark.project(params="repo", prepared=True)


# ---- training runs ---------------------------------------------------------------------------------------------
def test_a_finished_training_run_again_starts_a_new_run(project: Path) -> None:
    from aelab.data.prepared import load_prepared
    from aelab.training.run import train_variant

    data = load_prepared(Path("data/prepared"))
    one = train_variant(params("train.max_epochs=1"), "undercomplete", data)
    two = train_variant(params("train.max_epochs=1"), "undercomplete", data)
    assert one.run_id != two.run_id and one.metrics == two.metrics
    folder = next((project / "data" / "checkpoints" / "undercomplete").iterdir())
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == [
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


# ---- aelab bench -----------------------------------------------------------------------------------------------
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
