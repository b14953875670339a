"""What a finished pipeline training leaves in its MLflow run besides curves: sample reconstructions and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aelab.config import Params
from aelab.data.datamodule import AutoencoderDataModule
from aelab.models.base import AutoencoderModule
from aelab.plots import image_grid
from aelab.tracking import tracking_uri


def log_artifacts(
    run_id: str,
    params: Params,
    module: AutoencoderModule,
    dm: AutoencoderDataModule,
    out: Path,
    model_name: str = "model",
) -> None:
    """The sample grid and the model (with signature and input example, named `model_name`: the variant, so the
    UI's model list tells them apart) into the variant's MLflow run."""
    import mlflow
    from mlflow.models import infer_signature

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
    with mlflow.start_run(run_id=run_id):
        mlflow.log_figure(fig, "samples.png")
        if params.tracking.log_model:
            example = clean[:4].numpy()
            reconstructor = module.reconstructor().eval()
            with torch.no_grad():
                output = reconstructor(torch.from_numpy(example)).numpy()
            mlflow.pytorch.log_model(
                reconstructor,
                name=model_name,
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            )
