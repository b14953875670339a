"""What a pipeline training run records in MLflow besides curves: its own settings, its dataset, its experiment's
description, and the digest of the model file it wrote (how `evaluate` finds the run again)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from aelab.config import Params, flatten
from aelab.data.prepared import PreparedData
from aelab.paths import PREPARED_DIR
from aelab.training.lookup import MODEL_DIGEST_TAG, file_digest

EXPERIMENT_NOTE = (
    "aelab pipeline runs: one run per trained variant (tags aelab.variant, aelab.stage, dvc.exp_name), "
    "evaluation metrics as eval/*, and one run per baseline (PCA, raw inputs; tag aelab.role=baseline) "
    "to compare against in the chart view."
)


def run_params(params: Params, variant: str, world_size: int) -> dict[str, Any]:
    """The settings this run reads: seed, data, model, train and its own variant's section (not the others')."""
    own = {
        "seed": params.seed,
        "data": params.data.model_dump(mode="json"),
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "variants": {variant: params.variant(variant).model_dump(mode="json")},
    }
    # The global batch is `train.batch_size`, split over `world_size` processes (see AutoencoderDataModule).
    return {**flatten(own), "world_size": world_size}


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def describe_experiment(client: Any, experiment_id: str, note: str = EXPERIMENT_NOTE) -> None:
    """The experiment's description in the MLflow UI (`mlflow.note.content`), set once, and its kind: model
    training, so that the UI opens on the runs table rather than on the GenAI overview (traces, prompts)."""
    experiment = client.get_experiment(experiment_id)
    if "mlflow.note.content" not in experiment.tags:
        client.set_experiment_tag(experiment_id, "mlflow.note.content", note)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")


def log_dataset(client: Any, run_id: str, data: PreparedData, name: str) -> None:
    """The training split as the run's dataset input (name, digest, shape, source `data/prepared`)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # MLflow registers its local source class twice and says so
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(data.train.x, source=str(PREPARED_DIR), targets=data.train.y, name=name)
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])
    client.log_inputs(run_id, datasets=[entity])


def tag_model(client: Any, run_id: str, model_file: Path) -> None:
    """The run carries its model file's digest, so `evaluate` finds it without a run id in the DVC output."""
    client.set_tag(run_id, MODEL_DIGEST_TAG, file_digest(model_file))
