"""Finding the MLflow run that trained a model file, by the file's content digest.

The run id is not written into the model folder (a DVC output): a retrain with bit-identical weights must leave the
output's hash unchanged, so `evaluate` re-runs nothing downstream. Instead the training run carries the tag
`aelab.model_sha256`, and whoever holds the model file finds its run by that tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aelab.fileio import file_digest

MODEL_DIGEST_TAG = "aelab.model_sha256"


def find_training_run(client: Any, experiment: str, model_file: Path) -> Any | None:
    """The newest finished run of `experiment` that wrote `model_file` (by digest), or None."""
    found = client.get_experiment_by_name(experiment)
    if found is None or not model_file.exists():
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{file_digest(model_file)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
