"""What a finished pipeline training leaves in its MLflow run besides curves: sample reconstructions and the model."""

from __future__ import annotations

from pathlib import Path

import torch

from aelab.config import Params
from aelab.data.datamodule import AutoencoderDataModule
from aelab.models.base import AutoencoderModule
from aelab.plots import image_grid
from aelab.tracking import tracking_uri


def log_artifacts(run_id: str, params: Params, module: AutoencoderModule, dm: AutoencoderDataModule, out: Path) -> None:
    """The sample grid and the model bundle in `out` (a pyfunc serving codes of raw rows, with signature and
    input example) into the variant's MLflow run; the model is named after the bundle (the variant's name)."""
    import mlflow

    from aelab.serving.pyfunc import log_bundle_model

    clean = torch.from_numpy(dm.data.test.x[:8].copy())  # on CPU, and set up also after ddp_spawn
    corrupted = dm.corrupt(clean, "test", 0, 0)
    with torch.no_grad():
        recon = module.eval()(module.model_input(corrupted, clean))
    fig = image_grid(
        {"clean": clean.numpy(), "corrupted": corrupted.numpy(), "reconstructed": recon.numpy()},
        dm.data.image_shape,
        title=f"{module.variant}: test samples",
    )
    fig.savefig(out / "samples.png", dpi=80)
    mlflow.set_tracking_uri(tracking_uri(params.tracking))
    # The run's own experiment: an earlier step in this process (a search, another stage) may have made another
    # experiment the active one, and MLflow refuses to reopen a run outside the active experiment.
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_figure(fig, "samples.png")
        if params.tracking.log_model:
            register = f"aelab-{out.name}" if params.tracking.register_model else None
            log_bundle_model(out, name=out.name, register_as=register)
