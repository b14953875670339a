import json
from pathlib import Path

import mlflow
import pytest

from aelab.config import validate_params
from aelab.errors import TrainingError
from aelab.tracking import tracking_uri
from aelab.training.lookup import find_training_run
from aelab.training.run import train_variant
from tests.conftest import TINY_PARAMS


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_is_bit_for_bit_reproducible(prepared_digits, tiny_params):
    train_variant(tiny_params, "denoising", prepared_digits)
    first = _folder_bytes(Path("data/models/denoising"))
    train_variant(tiny_params, "denoising", prepared_digits)
    # the whole DVC output (model, metrics, curves, samples): a retrain leaves its hash unchanged
    assert _folder_bytes(Path("data/models/denoising")) == first
    assert {"model.pt", "metrics.json", "dvclive/plots/metrics/val/mse.tsv"} <= set(first)
    assert json.loads(first["metrics.json"])["test/mse"] > 0


def test_mlflow_run_holds_params_curves_test_metrics_and_artifacts(prepared_digits, tiny_params):
    result = train_variant(tiny_params, "sparse", prepared_digits)
    mlflow.set_tracking_uri(tracking_uri(tiny_params.tracking))
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["variants.sparse.rho"] == "0.1"
    assert run.data.params["train.max_epochs"] == "2"
    assert run.data.tags["aelab.variant"] == "sparse" and run.data.tags["aelab.stage"] == "train@sparse"
    assert "git_commit" not in run.data.tags  # MLflow's own mlflow.source.git.commit (test_native.py)
    for key in ("train/loss", "train/sparsity", "train/mean_activation", "val/loss", "val/mse"):
        assert len(client.get_metric_history(result.run_id, key)) == 2, key
    assert {"test/loss", "test/mse"} <= set(run.data.metrics)
    # the score the checkpoint was chosen on is recorded beside the test figures (results files select on it)
    val_losses = [m.value for m in client.get_metric_history(result.run_id, "val/loss")]
    assert result.metrics["best_val_loss"] == pytest.approx(min(val_losses))
    assert "samples.png" in [a.path for a in client.list_artifacts(result.run_id)]
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert any(m.source_run_id == result.run_id for m in models)
    model = next(m for m in models if m.source_run_id == result.run_id)
    assert model.name == "sparse"  # named after the variant
    loaded = mlflow.pyfunc.load_model(model.model_uri)
    assert loaded.metadata.signature is not None
    codes = loaded.predict(prepared_digits.test.x[:5] * 16.0)  # raw digits pixels (0..16) in, codes out
    assert codes.shape == (5, 80)
    assert not Path("data/models/sparse/run.json").exists()  # no run id inside the DVC output
    assert find_training_run(client, "aelab", Path("data/models/sparse/model.pt")).info.run_id == result.run_id


def test_nan_loss_stops_with_epoch_and_step(prepared_digits, tiny_params):
    raw = {**TINY_PARAMS, "model": {"loss": "mse"}, "train": {"max_epochs": 3, "lr": 1.0e25, "optimizer": "sgd"}}
    with pytest.raises(TrainingError, match=r"undercomplete: loss became nan at epoch \d+, step \d+; try a lower"):
        train_variant(validate_params(raw), "undercomplete", prepared_digits)


def test_ctrl_c_surfaces_as_keyboard_interrupt_on_every_training_path(prepared_digits, tiny_params):
    """One helper serves the pipeline, trials, one-class models and pre-training: none mistakes Ctrl-C for the end."""
    import lightning as L

    from aelab.models import build_module
    from aelab.training.run import build_datamodule
    from aelab.training.trainer import build_trainer, fit

    class CtrlC(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            raise KeyboardInterrupt

    module = build_module(tiny_params, "undercomplete", prepared_digits.n_features)
    trainer = build_trainer(tiny_params, None, False, callbacks=[CtrlC()])
    with pytest.raises(KeyboardInterrupt):
        fit(trainer, module, build_datamodule(tiny_params, "undercomplete", prepared_digits))


def test_neighbour_loss_trains_through_the_lightning_path(prepared_digits):
    """The data module pairs rows with neighbours, the module adds the term, and it is logged beside the
    reconstruction."""
    from aelab.training.run import fit_module

    variants = {**TINY_PARAMS["variants"], "undercomplete": {"hidden_dims": [32, 2], "neighbours": {"k": 5}}}
    fitted = fit_module(validate_params({**TINY_PARAMS, "variants": variants}), "undercomplete", prepared_digits)
    logged = fitted.trainer.callback_metrics
    assert {"train/neighbours", "train/recon", "val/loss"} <= set(logged)
    assert logged["train/loss"] == pytest.approx(float(logged["train/recon"] + logged["train/neighbours"]), rel=1e-5)
